"""AXI4 and AXI4-Lite interface signatures (master view) for the accelerator's bus ports.

Each bus is a :class:`wiring.Signature` whose five members are the AXI channels ``aw``, ``w``, ``b``, ``ar`` and
``r``. A channel is itself a signature seen from its *source*: the payload fields and ``valid`` are outputs and
``ready`` is an input. In the master view the request channels (``aw``, ``w``, ``ar``) are ``Out`` and the response
channels (``b``, ``r``) are ``In`` (flipped); a slave port is ``In(AXI4Signature(...))``.

Mapping to Verilog names
------------------------
``amaranth.back.verilog.convert`` names a port member by its path joined with ``__``: a component port ``bus`` of
this signature yields ``bus__ar__addr``, ``bus__ar__valid``, ``bus__r__ready``, ``bus__w__strb`` and so on. A
Xilinx / LiteX style name is the prefix, ``_``, the channel and the field run together: ``bus__ar__addr`` is
``m_axi_araddr``, ``bus__w__strb`` is ``m_axi_wstrb``. :func:`verilog_port_map` returns that mapping for every field
of a signature, so a Verilog wrapper (or a Vivado IP-XACT bus-interface description) can be generated instead of
written by hand. Fields the signature lacks (``awregion``, ``awuser``...) are tied off by the integrator: region 0,
user 0. AXI4 has no ``WID``; connect an AXI3 port (Zynq-7000 HP) through the usual AXI4-to-AXI3 converter, which
also splits bursts longer than 16 beats (or build the master with ``max_burst=16``).

Encodings (AXI spec, IHI0022): ``burst`` 0 FIXED, 1 INCR, 2 WRAP; ``resp`` 0 OKAY, 1 EXOKAY, 2 SLVERR, 3 DECERR;
``size`` is log2 of the bytes per beat; ``len`` is beats - 1.
"""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AXI4Signature", "AXI4LiteSignature", "AXIBurst", "AXIResp", "DATA_WIDTHS", "verilog_port_map"]

#: Data-bus widths accepted by both signatures (bits).
DATA_WIDTHS = (32, 64, 128, 256)


class AXIBurst:
    """``AxBURST`` encodings."""
    FIXED = 0
    INCR = 1
    WRAP = 2


class AXIResp:
    """``xRESP`` encodings; :meth:`is_error` is true for SLVERR and DECERR."""
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3

    @staticmethod
    def is_error(resp: int) -> bool:
        return resp >= AXIResp.SLVERR


def _channel(fields: dict) -> wiring.Signature:
    """A channel seen from its source: payload fields and ``valid`` out, ``ready`` in."""
    members = {name: Out(shape) for name, shape in fields.items()}
    members["valid"] = Out(1)
    members["ready"] = In(1)
    return wiring.Signature(members)


def _check_positive(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")


def _check_data_width(data_width) -> None:
    if data_width not in DATA_WIDTHS or isinstance(data_width, bool):
        raise ValueError(f"AXI data width must be one of {DATA_WIDTHS}, not {data_width!r}")


class AXI4Signature(wiring.Signature):
    """Full AXI4 bus, master view.

    Parameters
    ----------
    addr_width : int
        Byte-address width, 12 to 64.
    data_width : int
        Data-bus width in bits: 32, 64, 128 or 256.
    id_width : int
        Transaction ID width, at least 1.

    Members
    -------
    aw, ar : Out(channel)
        Address channels: ``addr``, ``id``, ``len`` (8), ``size`` (3), ``burst`` (2), ``lock`` (1), ``cache`` (4),
        ``prot`` (3), ``qos`` (4), ``valid``, ``ready``.
    w : Out(channel)
        Write data: ``data``, ``strb`` (data_width / 8), ``last``, ``valid``, ``ready``.
    b : In(channel)
        Write response: ``id``, ``resp`` (2), ``valid``, ``ready``.
    r : In(channel)
        Read data: ``id``, ``data``, ``resp`` (2), ``last``, ``valid``, ``ready``.
    """

    def __init__(self, *, addr_width: int = 32, data_width: int = 64, id_width: int = 1):
        _check_positive("AXI4 addr_width", addr_width, 12)
        if addr_width > 64:
            raise ValueError(f"AXI4 addr_width must be at most 64, not {addr_width!r}")
        _check_data_width(data_width)
        _check_positive("AXI4 id_width", id_width, 1)
        self._addr_width, self._data_width, self._id_width = addr_width, data_width, id_width
        address = {"addr": addr_width, "id": id_width, "len": 8, "size": 3, "burst": 2, "lock": 1,
                   "cache": 4, "prot": 3, "qos": 4}
        super().__init__({
            "aw": Out(_channel(address)),
            "w": Out(_channel({"data": data_width, "strb": data_width // 8, "last": 1})),
            "b": In(_channel({"id": id_width, "resp": 2})),
            "ar": Out(_channel(address)),
            "r": In(_channel({"id": id_width, "data": data_width, "resp": 2, "last": 1})),
        })

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    id_width = property(lambda self: self._id_width)

    def __eq__(self, other):
        return (type(other) is type(self) and other.addr_width == self.addr_width
                and other.data_width == self.data_width and other.id_width == self.id_width)

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width, self.id_width))

    def __repr__(self):
        return (f"AXI4Signature(addr_width={self.addr_width}, data_width={self.data_width}, "
                f"id_width={self.id_width})")


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite bus, master view.

    Parameters
    ----------
    addr_width : int
        Byte-address width, 3 to 64.
    data_width : int
        Data-bus width in bits: 32 or 64 (the widths AXI4-Lite allows).

    Members
    -------
    aw, ar : Out(channel)
        ``addr``, ``prot`` (3), ``valid``, ``ready``.
    w : Out(channel)
        ``data``, ``strb`` (data_width / 8), ``valid``, ``ready``.
    b : In(channel)
        ``resp`` (2), ``valid``, ``ready``.
    r : In(channel)
        ``data``, ``resp`` (2), ``valid``, ``ready``.
    """

    def __init__(self, *, addr_width: int, data_width: int = 32):
        _check_positive("AXI4-Lite addr_width", addr_width, 3)
        if addr_width > 64:
            raise ValueError(f"AXI4-Lite addr_width must be at most 64, not {addr_width!r}")
        if data_width not in (32, 64) or isinstance(data_width, bool):
            raise ValueError(f"AXI4-Lite data width must be 32 or 64, not {data_width!r}")
        self._addr_width, self._data_width = addr_width, data_width
        super().__init__({
            "aw": Out(_channel({"addr": addr_width, "prot": 3})),
            "w": Out(_channel({"data": data_width, "strb": data_width // 8})),
            "b": In(_channel({"resp": 2})),
            "ar": Out(_channel({"addr": addr_width, "prot": 3})),
            "r": In(_channel({"data": data_width, "resp": 2})),
        })

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)

    def __eq__(self, other):
        return (type(other) is type(self) and other.addr_width == self.addr_width
                and other.data_width == self.data_width)

    def __hash__(self):
        return hash((type(self), self.addr_width, self.data_width))

    def __repr__(self):
        return f"AXI4LiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


def verilog_port_map(signature: wiring.Signature, *, port: str = "bus", prefix: str = "m_axi") -> dict[str, str]:
    """Map the Verilog names Amaranth gives an AXI port to Xilinx/LiteX style names.

    ``verilog_port_map(AXI4Signature(), port="bus", prefix="m_axi")["bus__ar__addr"] == "m_axi_araddr"``.
    Use ``prefix="s_axi"`` for a slave port. The map covers every field, ``valid`` and ``ready`` included.
    """
    if not isinstance(signature, (AXI4Signature, AXI4LiteSignature)):
        raise TypeError(f"Signature must be an AXI4Signature or AXI4LiteSignature, not {signature!r}")
    mapping = {}
    for channel in ("aw", "w", "b", "ar", "r"):
        for field in signature.members[channel].signature.members:
            mapping[f"{port}__{channel}__{field}"] = f"{prefix}_{channel}{field}"
    return mapping
