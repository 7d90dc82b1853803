"""AXI4 memory master: word-granular read and write commands in, INCR bursts out.

The accelerator's DMA engines describe transfers as "``beats`` bus words starting at ``addr``"; this block turns each
command into AXI4 INCR bursts of at most ``max_burst`` beats that never cross a 4 KiB boundary, and returns the data
(reads) or one completion (writes) on typed streams.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .axi import AXI4Signature, AXIBurst, _check_data_width

__all__ = ["AXI4Master", "read_command_layout", "read_data_layout", "write_command_layout", "write_data_layout",
           "write_response_layout", "word_offset_bits", "check_bus"]

_PAGE_BYTES = 4096
#: ``AxCACHE`` for normal non-cacheable bufferable memory, what Xilinx recommends for HP/ACP masters.
_CACHE_NORMAL_BUFFERABLE = 0b0011


# ---- The user-side payloads, shared with the units that drive the master.

def word_offset_bits(data_width: int) -> int:
    """Address bits below the bus word: log2(data_width / 8)."""
    return (data_width // 8).bit_length() - 1


def check_bus(data_width, addr_width) -> None:
    """Validate a unit's bus parameters the way :class:`hw.axi4_master.AXI4Master` does."""
    _check_data_width(data_width)
    if not isinstance(addr_width, int) or isinstance(addr_width, bool) or not 12 <= addr_width <= 64:
        raise ValueError(f"Address width must be an integer from 12 to 64, not {addr_width!r}")


def read_command_layout(addr_width: int = 32, data_width: int = 64) -> data.StructLayout:
    """``rd_cmd`` payload of the AXI master: ``beats`` bus words from the word-aligned byte address ``addr``."""
    check_bus(data_width, addr_width)
    return data.StructLayout({"addr": unsigned(addr_width),
                              "beats": unsigned(addr_width - word_offset_bits(data_width) + 1)})


#: ``wr_cmd`` has the same payload as ``rd_cmd``.
write_command_layout = read_command_layout


def read_data_layout(data_width: int = 64) -> data.StructLayout:
    """``rd_data`` payload of the AXI master: one bus word, the command's last-word flag and the RRESP error flag."""
    _check_data_width(data_width)
    return data.StructLayout({"data": unsigned(data_width), "last": unsigned(1), "error": unsigned(1)})


def write_data_layout(data_width: int = 64) -> data.StructLayout:
    """``wr_data`` payload of the AXI master: one bus word and its byte strobes."""
    _check_data_width(data_width)
    return data.StructLayout({"data": unsigned(data_width), "strb": unsigned(data_width // 8)})


def write_response_layout() -> data.StructLayout:
    """``wr_resp`` payload of the AXI master: one per write command, ``error`` if any burst got SLVERR/DECERR."""
    return data.StructLayout({"error": unsigned(1)})


class AXI4Master(wiring.Component):
    """AXI4 master that executes word-granular read and write commands as INCR bursts.

    Parameters
    ----------
    addr_width : int
        Byte-address width of the bus, 12 to 64.
    data_width : int
        Bus data width in bits: 32, 64, 128 or 256. A *word* is one bus beat of ``data_width // 8`` bytes.
    max_burst : int
        Longest burst issued, 1 to 256 beats (use 16 for an AXI3 port such as the Zynq-7000 HP ports).
    outstanding : int
        Commands of each direction accepted and not yet finished (and write bursts awaiting B), 1 to 256.

    Members
    -------
    bus : Out(AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=1))
        The master port. Every burst is INCR with full-width beats (``size`` = log2(data_width / 8)), ID 0,
        ``cache`` 0b0011, ``prot`` 0, ``lock`` 0, ``qos`` 0.
    rd_cmd : In(stream.Signature(StructLayout({"addr": addr_width, "beats": beats_width})))
        Read ``beats`` words from byte address ``addr``. ``addr`` must be word aligned: its low
        log2(data_width / 8) bits are ignored. A zero-beat command is accepted and produces nothing.
    rd_data : Out(stream.Signature(StructLayout({"data": data_width, "last": 1, "error": 1})))
        One payload per word, in address order. ``last`` marks the final word of a command; ``error`` is set on a
        word whose RRESP was SLVERR or DECERR (its data is whatever the slave returned).
    wr_cmd : In(stream.Signature(StructLayout({"addr": addr_width, "beats": beats_width})))
        Write ``beats`` words to byte address ``addr`` (word aligned as for ``rd_cmd``).
    wr_data : In(stream.Signature(StructLayout({"data": data_width, "strb": data_width // 8})))
        The words of the current write command, in address order, each with its byte strobes. Only accepted while a
        write command is in progress.
    wr_resp : Out(stream.Signature(StructLayout({"error": 1})))
        One payload per write command (zero-beat ones included), after the B responses of all its bursts;
        ``error`` is set if any of them was SLVERR or DECERR.
    busy, rd_busy, wr_busy : Out(1)
        A read command (``rd_busy``), a write command (``wr_busy``) or either (``busy``) is in progress.

    ``beats_width`` is ``addr_width - log2(data_width / 8) + 1``, enough for a command spanning the address space.

    Latency, throughput and flow control
    ------------------------------------
    The first ``ARVALID``/``AWVALID`` of a command rises :attr:`address_latency` cycles after the command handshake;
    later bursts follow back to back, without waiting for data or responses. Commands are pipelined: a new command of
    a direction is accepted as soon as every burst of the previous one has been presented on AR/AW (its data and
    responses may still be outstanding), up to ``outstanding`` commands (and, for writes, ``outstanding`` bursts
    awaiting B). So rows of a 2-D transfer, one short command each, cost one bus word per cycle, not one memory
    round trip. R beats pass combinationally to ``rd_data`` (``r.ready`` is ``rd_data.ready`` while a command
    expects words); ``wr_data`` goes to W through a two-entry register slice (W is driven from registers,
    ``wr_data.ready`` comes from registers, a beat is on W :attr:`write_data_latency` cycle after its handshake), so
    both directions move one word per cycle across command boundaries and honour back-pressure from either side;
    no ``valid`` depends on a ``ready``.
    Reads and writes run independently. Error responses never stop a command: every word is still transferred and
    reported.
    Measured (tests): a 1024-word read or write with a stall-free slave takes 1029-1030 cycles.
    """

    def __init__(self, *, addr_width: int = 32, data_width: int = 64, max_burst: int = 16, outstanding: int = 8):
        if not isinstance(addr_width, int) or isinstance(addr_width, bool) or not 12 <= addr_width <= 64:
            raise ValueError(f"Address width must be an integer from 12 to 64, not {addr_width!r}")
        _check_data_width(data_width)
        if not isinstance(max_burst, int) or isinstance(max_burst, bool) or not 1 <= max_burst <= 256:
            raise ValueError(f"Maximum burst length must be an integer from 1 to 256 beats, not {max_burst!r}")
        self._addr_width = addr_width
        self._data_width = data_width
        if not isinstance(outstanding, int) or isinstance(outstanding, bool) or not 1 <= outstanding <= 256:
            raise ValueError(f"Outstanding command limit must be an integer from 1 to 256, not {outstanding!r}")
        self._max_burst = max_burst
        self._outstanding = outstanding
        self._offset_bits = word_offset_bits(data_width)
        cmd = read_command_layout(addr_width, data_width)
        super().__init__({
            "bus": Out(AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=1)),
            "rd_cmd": In(stream.Signature(cmd)),
            "rd_data": Out(stream.Signature(read_data_layout(data_width))),
            "wr_cmd": In(stream.Signature(cmd)),
            "wr_data": In(stream.Signature(write_data_layout(data_width))),
            "wr_resp": Out(stream.Signature(write_response_layout())),
            "busy": Out(1),
            "rd_busy": Out(1),
            "wr_busy": Out(1),
        })

    addr_width = property(lambda self: self._addr_width)
    data_width = property(lambda self: self._data_width)
    max_burst = property(lambda self: self._max_burst)
    outstanding = property(lambda self: self._outstanding)

    @property
    def bytes_per_word(self) -> int:
        return self._data_width // 8

    @property
    def beats_width(self) -> int:
        """Width of the ``beats`` field of ``rd_cmd`` / ``wr_cmd``."""
        return self._addr_width - self._offset_bits + 1

    @property
    def address_latency(self) -> int:
        """Cycles from a command handshake to the first ``ARVALID`` / ``AWVALID`` of that command."""
        return 2

    @property
    def write_data_latency(self) -> int:
        """Cycles from a ``wr_data`` handshake to that beat's ``WVALID`` (W not stalled): the register slice."""
        return 1

    @property
    def page_words(self) -> int:
        """Words in a 4 KiB page: no burst crosses a multiple of this word address."""
        return _PAGE_BYTES // self.bytes_per_word

    def _address_channel(self, m, name: str, channel, start_word, start_beats, start, room):
        """Issue the bursts of a command on ``channel`` while ``room``; returns (free for a new command, a burst is
        presented this cycle, that burst is its command's last, no burst left)."""
        word_bits = self._addr_width - self._offset_bits
        page_bits = self.page_words.bit_length() - 1
        word = Signal(word_bits, name=f"{name}_word")      # word address of the next burst
        left = Signal(self.beats_width, name=f"{name}_left")  # words not yet covered by an issued burst

        # The next burst's bound, as registers: ``to_page`` words to the page end from ``word`` and ``limit`` =
        # min(to_page, max_burst). They are set by a command and advanced by each burst without an adder on the
        # word address (see below), so the burst length is a narrow compare and mux on registers.
        span = max(self.page_words, self._max_burst)
        to_page = Signal(range(self.page_words + 1), name=f"{name}_to_page")
        limit = Signal(range(span + 1), name=f"{name}_limit")
        burst = Signal(range(span + 1), name=f"{name}_burst")
        narrow = len(limit)
        left_small = Signal(name=f"{name}_left_small")    # left < 2**narrow: its low bits may be the burst
        m.d.comb += [
            left_small.eq(left[narrow:] == 0),
            burst.eq(Mux(left_small & (left[:narrow] < limit), left[:narrow], limit)),
        ]

        m.d.comb += [
            channel.id.eq(0),
            channel.size.eq(self._offset_bits),
            channel.burst.eq(AXIBurst.INCR),
            channel.lock.eq(0),
            channel.cache.eq(_CACHE_NORMAL_BUFFERABLE),
            channel.prot.eq(0),
            channel.qos.eq(0),
        ]
        handshake = channel.valid & channel.ready
        present = Signal(name=f"{name}_present")
        # The address registers reload in the cycle a burst is accepted, so bursts can go back to back. A new
        # command (``start``) is taken once every burst of the previous one has been presented, from the cycle its
        # last burst is presented on (the command's registers win over the burst's update), so one-burst commands
        # follow one per cycle.
        # ``empty`` is ``left == 0`` as a register (set by the last burst, cleared by a command with words), so the
        # command accept below depends on registers and ``ready`` only.
        empty = Signal(init=1, name=f"{name}_empty")
        m.d.comb += present.eq(~empty & (~channel.valid | channel.ready) & room)
        # ``single``: the words left fit in the next burst (it is the command's last). Registered along with word
        # and left, so the command handshake (``free``) does not wait for the burst arithmetic.
        single = Signal(name=f"{name}_single")

        def fits(w, n):
            return (n <= self._max_burst) & (n <= self.page_words - w[:page_bits])

        # After a burst that is not the command's last (burst = limit < left), the next one's bounds and whether
        # the rest fits in it, without the burst arithmetic: a burst cut at the page end leaves the next one
        # starting on a page, one cut at max_burst leaves ``to_page - max_burst`` words to the page end.
        cap = min(self._max_burst, self.page_words)
        page_cut = Signal(name=f"{name}_page_cut")
        m.d.comb += page_cut.eq(to_page <= self._max_burst)
        to_page_after = Signal.like(to_page, name=f"{name}_to_page_after")
        m.d.comb += to_page_after.eq(Mux(page_cut, self.page_words, to_page - self._max_burst))
        single_after = Signal(name=f"{name}_single_after")
        m.d.comb += single_after.eq(Mux(page_cut, left <= to_page + cap,
                                        (left <= 2 * self._max_burst) & (left <= to_page)))

        def bound(to_page_value):
            return Mux(to_page_value < self._max_burst, to_page_value, self._max_burst)

        with m.If(present):
            m.d.sync += [
                channel.valid.eq(1),
                channel.addr.eq(word << self._offset_bits),
                channel.len.eq(burst - 1),
                word.eq(word + burst),
                left.eq(left - burst),
                to_page.eq(to_page_after),
                limit.eq(bound(to_page_after)),
                single.eq(single_after),
                empty.eq(single),
            ]
        with m.Elif(handshake):
            m.d.sync += channel.valid.eq(0)
        with m.If(start):
            start_to_page = self.page_words - start_word[:page_bits]
            m.d.sync += [word.eq(start_word), left.eq(start_beats), single.eq(fits(start_word, start_beats)),
                         to_page.eq(start_to_page), limit.eq(bound(start_to_page)),
                         empty.eq(start_beats == 0)]
        # Free for the next command when no burst is left, or in the cycle the last one is presented.
        free = empty | (present & single)
        return free, present, single, empty

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        page_last = self.page_words - 1
        page_bits = self.page_words.bit_length() - 1
        word_bits = self._addr_width - self._offset_bits

        # ---------------------------------------------------------------- reads
        # Accepted commands wait in ``rd_queue`` (their word counts) for the R side; the AR side issues the
        # bursts of one command after another as soon as each is accepted.
        m.submodules.rd_queue = rd_queue = SyncFIFO(width=self.beats_width, depth=self._outstanding)
        rd_start = self.rd_cmd.valid & self.rd_cmd.ready
        rd_word = self.rd_cmd.payload.addr[self._offset_bits:]
        ar_free, _, _, ar_empty = self._address_channel(m, "ar", bus.ar, rd_word, self.rd_cmd.payload.beats, rd_start,
                                                 room=1)
        r_left = Signal(self.beats_width)  # words of the current command still to come on R
        # r_left == 0 and r_left == 1 as registers, so the R handshake and the queue's read wait on no wide compare.
        r_zero = Signal(init=1, name="r_zero")
        r_one = Signal(name="r_one")
        r_handshake = bus.r.valid & bus.r.ready
        m.d.comb += [
            self.rd_cmd.ready.eq(ar_free & rd_queue.w_rdy),
            rd_queue.w_en.eq(rd_start & (self.rd_cmd.payload.beats != 0)),
            rd_queue.w_data.eq(self.rd_cmd.payload.beats),
            self.rd_data.valid.eq(bus.r.valid & ~r_zero),
            bus.r.ready.eq(self.rd_data.ready & ~r_zero),
            self.rd_data.payload.data.eq(bus.r.data),
            self.rd_data.payload.error.eq(bus.r.resp[1]),
            # Count words ourselves rather than trust RLAST: a slave's wrong RLAST cannot lose a command.
            self.rd_data.payload.last.eq(r_one),
        ]
        # The next command's count is taken in the cycle the current one's last word passes: no bubble. Queued
        # counts are never 0 (zero-word commands are not queued).
        with m.If(r_zero | (r_handshake & r_one)):
            m.d.comb += rd_queue.r_en.eq(1)
            m.d.sync += [r_left.eq(Mux(rd_queue.r_rdy, rd_queue.r_data, 0)), r_zero.eq(~rd_queue.r_rdy),
                         r_one.eq(rd_queue.r_rdy & (rd_queue.r_data == 1))]
        with m.Elif(r_handshake):
            m.d.sync += [r_left.eq(r_left - 1), r_zero.eq(r_one), r_one.eq(r_left == 2)]
        rd_active = Signal()
        m.d.comb += rd_active.eq(~ar_empty | bus.ar.valid | ~r_zero | rd_queue.r_rdy)

        # --------------------------------------------------------------- writes
        # Accepted commands wait in ``w_queue`` (start word and count) for the W side. Every burst presented on AW
        # puts a mark in ``b_queue`` (is it its command's last burst?), a zero-word command a mark of its own, so
        # the B responses, which come in AW order, are attributed to their commands without any burst arithmetic.
        m.submodules.w_queue = w_queue = SyncFIFO(width=word_bits + self.beats_width, depth=self._outstanding)
        m.submodules.b_queue = b_queue = SyncFIFO(width=2, depth=self._outstanding)
        wr_start = self.wr_cmd.valid & self.wr_cmd.ready
        wr_word = self.wr_cmd.payload.addr[self._offset_bits:]
        wr_beats = self.wr_cmd.payload.beats
        aw_free, aw_present, aw_last, aw_empty = self._address_channel(m, "aw", bus.aw, wr_word, wr_beats, wr_start,
                                                                       room=b_queue.w_rdy)
        m.d.comb += [
            # A zero-word command's mark cannot share b_queue's write port with a presented burst: it waits a cycle.
            self.wr_cmd.ready.eq(aw_free & w_queue.w_rdy & b_queue.w_rdy & ~(aw_present & (wr_beats == 0))),
            w_queue.w_en.eq(wr_start & (wr_beats != 0)),
            w_queue.w_data.eq(Cat(wr_word, wr_beats)),
        ]
        with m.If(aw_present):
            m.d.comb += [b_queue.w_en.eq(1), b_queue.w_data.eq(Cat(aw_last, 0))]
        with m.Elif(wr_start & (wr_beats == 0)):
            m.d.comb += [b_queue.w_en.eq(1), b_queue.w_data.eq(Cat(1, 1))]

        # W: beats of the current command; WLAST re-derived beat by beat with the greedy split of the address side
        # (end at the command's last word, after max_burst beats, or at a page end, whichever comes first).
        w_word = Signal(word_bits)                 # word address of the next W beat
        w_left = Signal(self.beats_width)
        w_beat = Signal(range(self._max_burst))    # index of the next W beat in its burst
        w_zero = Signal(init=1, name="w_zero")    # w_left == 0 and w_left == 1, as registers (see r_zero)
        w_one = Signal(name="w_one")
        # The beats leave through a two-entry register slice (``w_main`` drives W, ``w_side`` catches a beat taken
        # while W stalls), so W's valid, data and last are registers and ``wr_data.ready`` is one gate on registers:
        # no combinational path from the bus into the STORE unit's data path or back. A beat reaches W the cycle
        # after its ``wr_data`` handshake (:attr:`write_data_latency`); one word per cycle still flows.
        w_beat_layout = data.StructLayout({"data": unsigned(self._data_width),
                                           "strb": unsigned(self._data_width // 8), "last": unsigned(1)})
        w_main_valid, w_side_valid = Signal(name="w_main_valid"), Signal(name="w_side_valid")
        w_main = Signal(w_beat_layout, name="w_main", reset_less=True)
        w_side = Signal(w_beat_layout, name="w_side", reset_less=True)
        w_in = Signal(w_beat_layout, name="w_in")
        w_handshake = Signal()      # a beat of the current command taken from wr_data (into the slice)
        m.d.comb += [
            self.wr_data.ready.eq(~w_side_valid & ~w_zero),
            w_handshake.eq(self.wr_data.valid & self.wr_data.ready),
            w_in.data.eq(self.wr_data.payload.data),
            w_in.strb.eq(self.wr_data.payload.strb),
            w_in.last.eq(w_one | (w_beat == self._max_burst - 1) | (w_word[:page_bits] == page_last)),
            bus.w.valid.eq(w_main_valid),
            bus.w.data.eq(w_main.data),
            bus.w.strb.eq(w_main.strb),
            bus.w.last.eq(w_main.last),
        ]
        with m.If(~w_main_valid | bus.w.ready):
            with m.If(w_side_valid):
                m.d.sync += [w_main.eq(w_side), w_main_valid.eq(1), w_side_valid.eq(0)]
            with m.Else():
                m.d.sync += [w_main.eq(w_in), w_main_valid.eq(w_handshake)]
        with m.Elif(w_handshake):
            m.d.sync += [w_side.eq(w_in), w_side_valid.eq(1)]
        with m.If(w_zero | (w_handshake & w_one)):
            m.d.comb += w_queue.r_en.eq(1)
            queued_beats = w_queue.r_data[word_bits:]
            m.d.sync += [w_word.eq(w_queue.r_data[:word_bits]),
                         w_left.eq(Mux(w_queue.r_rdy, queued_beats, 0)), w_beat.eq(0),
                         w_zero.eq(~w_queue.r_rdy), w_one.eq(w_queue.r_rdy & (queued_beats == 1))]
        with m.Elif(w_handshake):
            m.d.sync += [w_word.eq(w_word + 1), w_left.eq(w_left - 1),
                         w_beat.eq(Mux(w_in.last, 0, w_beat + 1)), w_zero.eq(w_one), w_one.eq(w_left == 2)]

        # B: one mark per response; a command's response leaves after the B of its last burst (or at once for a
        # zero-word command). B waits while a finished response is offered and not taken.
        resp_valid = Signal()
        resp_error = Signal()
        wr_error = Signal()                        # an error seen on the current command's earlier bursts
        mark_last, mark_empty = b_queue.r_data[0], b_queue.r_data[1]
        # A response slot is free when empty or being taken this cycle, so one-burst commands finish one per cycle.
        resp_free = Signal()
        m.d.comb += [resp_free.eq(~resp_valid | self.wr_resp.ready),
                     bus.b.ready.eq(resp_free & b_queue.r_rdy & ~mark_empty)]
        b_handshake = bus.b.valid & bus.b.ready
        with m.If(self.wr_resp.valid & self.wr_resp.ready):
            m.d.sync += resp_valid.eq(0)
        with m.If(resp_free & b_queue.r_rdy & mark_empty):
            m.d.comb += b_queue.r_en.eq(1)
            m.d.sync += [resp_valid.eq(1), resp_error.eq(0)]
        with m.Elif(b_handshake):
            m.d.comb += b_queue.r_en.eq(1)
            with m.If(mark_last):
                m.d.sync += [resp_valid.eq(1), resp_error.eq(wr_error | bus.b.resp[1]), wr_error.eq(0)]
            with m.Else():
                m.d.sync += wr_error.eq(wr_error | bus.b.resp[1])
        wr_active = Signal()
        m.d.comb += [
            wr_active.eq(~aw_empty | bus.aw.valid | ~w_zero | w_queue.r_rdy | w_main_valid | w_side_valid |
                         b_queue.r_rdy | resp_valid),
            self.wr_resp.valid.eq(resp_valid),
            self.wr_resp.payload.error.eq(resp_error),
            self.rd_busy.eq(rd_active),
            self.wr_busy.eq(wr_active),
            self.busy.eq(rd_active | wr_active),
        ]
        return m
