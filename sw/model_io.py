"""Model files: the float model (``systolic8-float-1``) and the quantized int8 model (``systolic8-int8-1``).

Both are NumPy ``.npz`` archives read with ``allow_pickle=False``; nothing in them is ever unpickled.

Float file (:func:`save_float` / :func:`load_float`):
    ``"__format__"``: 0-d unicode array ``"systolic8-float-1"``;
    ``"__network__"``: 0-d unicode array, the network's JSON (:meth:`sw.network.Network.dumps`);
    ``"<layer>.weight"``, ``"<layer>.bias"``: float32 arrays of the shapes the network implies.

Quantized file (:func:`save_quantized` / :func:`load_quantized`):
    ``"__metadata__"``: 0-d unicode array holding JSON::

        {"format": "systolic8-int8-1",
         "network": <Network.to_json()>,
         "input": {"scale": float, "zero_point": int},
         "float_model": {"sha256": <sw.quantize.float_digest of the float model>},   (optional)
         "layers": [{"name", "kind", "input_shape", "output_shape", "input_scale", "input_zero_point",
                     "output_scale", "output_zero_point", "act_min", "act_max"}, ...]}

    and for each Conv2D/Dense layer: ``"<layer>.weight"`` int8 (HWIO or (in, units)), ``"<layer>.bias"`` int32,
    ``"<layer>.weight_scale"`` float64, ``"<layer>.multiplier"`` int32 and ``"<layer>.shift"`` int8 (per channel).

Loading validates everything and raises :class:`ModelFileError` naming the file, the field and the fix; saving
validates the same way before anything is written, and writes atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile

import numpy as np

from sim.arith import MAX_SHIFT, MIN_SHIFT
from sw.network import Conv2D, Dense, Network, NetworkError
from sw.quantize import QuantizedLayer, QuantizedNetwork, float_digest

__all__ = ["FLOAT_FORMAT", "INT8_FORMAT", "ModelFileError", "save_float", "load_float", "save_quantized",
           "load_quantized", "validate_quantized", "check_pair"]

FLOAT_FORMAT = "systolic8-float-1"
INT8_FORMAT = "systolic8-int8-1"

_FORMAT_KEY = "__format__"
_NETWORK_KEY = "__network__"
_METADATA_KEY = "__metadata__"
#: Per-channel arrays of a Conv2D/Dense layer in a quantized file, with their dtypes.
_QUANT_ARRAYS = {"weight": np.dtype(np.int8), "bias": np.dtype(np.int32), "weight_scale": np.dtype(np.float64),
                 "multiplier": np.dtype(np.int32), "shift": np.dtype(np.int8)}
_LAYER_FIELDS = ("name", "kind", "input_shape", "output_shape", "input_scale", "input_zero_point",
                 "output_scale", "output_zero_point", "act_min", "act_max")
# Relative tolerance between M0 * 2**(shift - 31) and S_in * S_w / S_out: M0 has 31 significant bits.
_MULTIPLIER_RTOL = 2.0 ** -28

_REQUANTIZE_FIX = "re-run sw.quantize.quantize on the float model"


class ModelFileError(ValueError):
    """A model file (or a model about to be written) is invalid.

    The message reads ``"<file>: <field>: <problem>. Fix: <fix>"``; ``path``, ``field`` and ``fix`` are attributes.
    """

    def __init__(self, path, field, problem, fix):
        self.path, self.field, self.problem, self.fix = str(path), field, problem, fix
        super().__init__(f"{path}: {field}: {problem}. Fix: {fix}")


# ---------------------------------------------------------------------------------------------------------------
# npz reading and writing


def _read_npz(path) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, refusing anything that is not a plain (non-object) NumPy array."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ModelFileError(path, "file", "no such file", "check the path") from None
    except OSError as exc:
        raise ModelFileError(path, "file", f"cannot be opened ({exc.strerror or exc})",
                             "check the path and its permissions") from None
    with f:
        magic = f.read(6)
        if magic[:4] != b"PK\x03\x04":
            what = ("an empty file" if not magic else
                    "a single .npy array" if magic == b"\x93NUMPY" else "not a zip archive")
            raise ModelFileError(path, "file", f"is not an .npz archive ({what})",
                                 "pass a model file written by sw.model_io.save_float or save_quantized")
        f.seek(0)
        arrays = {}
        key = None
        try:
            with np.load(f, allow_pickle=False) as npz:
                for key in npz.files:
                    try:
                        value = npz[key]
                    except ValueError as exc:
                        if "allow_pickle" in str(exc):
                            raise ModelFileError(
                                path, f"array {key!r}", "is an object array, which would need unpickling; refused",
                                "store plain numeric or unicode arrays (re-save the model with sw.model_io)") from None
                        raise
                    if not isinstance(value, np.ndarray):
                        raise ModelFileError(path, f"member {key!r}", "is not a NumPy .npy array",
                                             "an .npz model holds only .npy members; re-save it with sw.model_io")
                    if value.dtype.hasobject:
                        raise ModelFileError(path, f"array {key!r}", "has an object dtype; refused",
                                             "store plain numeric or unicode arrays")
                    arrays[key] = value
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
            where = "file" if key is None else f"array {key!r}"
            raise ModelFileError(path, where, f"is truncated or corrupt ({type(exc).__name__}: {exc})",
                                 "re-export the model (systolic8 train / quantize), or restore a shipped one "
                                 "with `git checkout models/`") from None
    return arrays


def _write_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to exactly ``path`` (np.savez would append '.npz'), atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a model file is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _unicode_scalar(path, arrays, key, what, fix):
    if key not in arrays:
        raise ModelFileError(path, key, f"is missing ({what})", fix)
    arr = arrays[key]
    if arr.shape != () or arr.dtype.kind != "U":
        raise ModelFileError(path, key, f"must be a 0-d unicode array, not {arr.dtype} of shape {arr.shape}", fix)
    return str(arr[()])


def _check_format(path, arrays, key, expected):
    # Keyed by the format found: what to do with a file of the other kind.
    fix = {FLOAT_FORMAT: "this is a float model: load it with sw.model_io.load_float, or quantize it "
                         "(sw.quantize.quantize) and write it with save_quantized",
           INT8_FORMAT: "this is a quantized model: load it with sw.model_io.load_quantized"}
    found = _unicode_scalar(path, arrays, key, f"format version {expected!r}",
                            f"this is not a {expected} file; write it with sw.model_io")
    if found != expected:
        hint = fix.get(found) if found in fix else f"this reader supports only {expected}; re-export with sw.model_io"
        raise ModelFileError(path, key, f"format is {found!r}, expected {expected!r}", hint)


def _parse_network(path, field, obj) -> Network:
    try:
        return Network.from_json(obj)
    except NetworkError as exc:
        raise ModelFileError(path, field, f"invalid network description ({exc})",
                             "re-export the model from a valid sw.network.Network") from None


# ---------------------------------------------------------------------------------------------------------------
# Float model


def _float_param_problems(path, network, arrays, *, in_file):
    """Report missing/extra parameters and per-parameter dtype, shape and finiteness."""
    expected = network.param_shapes()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing:
        raise ModelFileError(path, "parameters", f"missing {missing}",
                             "export every '<layer>.weight' and '<layer>.bias' of the network")
    if extra:
        raise ModelFileError(path, "parameters", f"unexpected arrays {extra} (the network has no such parameters)",
                             "remove them or fix the network description")
    out = {}
    for key, shape in expected.items():
        arr = np.asarray(arrays[key])
        if in_file and arr.dtype != np.float32:
            raise ModelFileError(path, key, f"has dtype {arr.dtype}, expected float32",
                                 "store the parameters as float32 (save_float converts them)")
        if not in_file and not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ModelFileError(path, key, f"has dtype {arr.dtype}, expected a real number type",
                                 "pass float arrays")
        if arr.shape != shape:
            layer = key.rsplit(".", 1)[0]
            raise ModelFileError(path, key, f"has shape {arr.shape}, expected {shape}",
                                 f"layer {layer!r} needs {shape} (HWIO conv weights, (in, units) dense weights)")
        if not np.all(np.isfinite(arr)):
            raise ModelFileError(path, key, "holds NaN or infinite values",
                                 "export a trained model with finite weights")
        out[key] = arr.astype(np.float32)
    return out


def save_float(path, network: Network, params) -> None:
    """Write a float model file: the network description and its parameters as float32."""
    if not isinstance(network, Network):
        raise TypeError(f"network must be a sw.network.Network, not {type(network).__name__}")
    try:
        params = dict(params)
    except (TypeError, ValueError):
        raise ModelFileError(path, "params", f"must be a mapping of parameter names to arrays, not "
                             f"{type(params).__name__}", "pass a dict such as {'conv1.weight': ...}") from None
    arrays = _float_param_problems(path, network, params, in_file=False)
    arrays[_FORMAT_KEY] = np.array(FLOAT_FORMAT)
    arrays[_NETWORK_KEY] = np.array(network.dumps())
    _write_npz(path, arrays)


def load_float(path) -> tuple[Network, dict[str, np.ndarray]]:
    """Read a float model file; returns ``(network, params)`` with float32 parameters."""
    arrays = _read_npz(path)
    if _FORMAT_KEY not in arrays and _METADATA_KEY in arrays:
        raise ModelFileError(path, _FORMAT_KEY, "is missing: this looks like a quantized model file",
                             "load it with sw.model_io.load_quantized")
    _check_format(path, arrays, _FORMAT_KEY, FLOAT_FORMAT)
    text = _unicode_scalar(path, arrays, _NETWORK_KEY, "the network description",
                           "re-export the model with sw.model_io.save_float")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(path, _NETWORK_KEY, f"is not valid JSON ({exc})",
                             "re-export the model with sw.model_io.save_float") from None
    network = _parse_network(path, _NETWORK_KEY, obj)
    params = {k: v for k, v in arrays.items() if k not in (_FORMAT_KEY, _NETWORK_KEY)}
    return network, _float_param_problems(path, network, params, in_file=True)


# ---------------------------------------------------------------------------------------------------------------
# Quantized model


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_scale(path, field, value):
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0.0:
        raise ModelFileError(path, field, f"must be a finite positive number, not {value!r}", _REQUANTIZE_FIX)


def _check_int8(path, field, value):
    if not _is_int(value) or not -128 <= int(value) <= 127:
        raise ModelFileError(path, field, f"must be an int8 integer in [-128, 127], not {value!r}", _REQUANTIZE_FIX)


def validate_quantized(qnet: QuantizedNetwork, path="<quantized network>") -> None:
    """Check a QuantizedNetwork completely (dtypes, shapes, value ranges, scale chaining, multipliers).

    Raises :class:`ModelFileError` naming ``path``, the layer field and the fix.
    """
    if not isinstance(qnet, QuantizedNetwork):
        raise TypeError(f"expected a sw.quantize.QuantizedNetwork, not {type(qnet).__name__}")
    network = qnet.network
    if not isinstance(network, Network):
        raise ModelFileError(path, "network", f"must be a sw.network.Network, not {type(network).__name__}",
                             _REQUANTIZE_FIX)
    _check_scale(path, "input.scale", qnet.input_scale)
    _check_int8(path, "input.zero_point", qnet.input_zero_point)
    if len(qnet.layers) != len(network.layers):
        raise ModelFileError(path, "layers", f"{len(qnet.layers)} quantized layers for a network of "
                             f"{len(network.layers)}", _REQUANTIZE_FIX)
    shapes = network.shapes()
    s_prev, z_prev, prev_field = float(qnet.input_scale), int(qnet.input_zero_point), "input"
    for i, (layer, q, shape_in) in enumerate(zip(network.layers, qnet.layers, shapes)):
        field = f"layers[{i}] ({layer.name!r})"
        if not isinstance(q, QuantizedLayer):
            raise ModelFileError(path, field, f"must be a QuantizedLayer, not {type(q).__name__}", _REQUANTIZE_FIX)
        if q.name != layer.name or q.kind != layer.kind:
            raise ModelFileError(path, field, f"quantizes {q.kind} {q.name!r} but the network has {layer.kind} "
                                 f"{layer.name!r}", "list the quantized layers in the network's order")
        for attr in ("input_scale", "output_scale"):
            _check_scale(path, f"{field}.{attr}", getattr(q, attr))
        for attr in ("input_zero_point", "output_zero_point", "act_min", "act_max"):
            _check_int8(path, f"{field}.{attr}", getattr(q, attr))
        if q.act_min > q.act_max:
            raise ModelFileError(path, f"{field}.act_min", f"act_min {q.act_min} exceeds act_max {q.act_max}",
                                 "the clamp needs act_min <= act_max")
        if float(q.input_scale) != s_prev or int(q.input_zero_point) != z_prev:
            raise ModelFileError(path, f"{field}.input_scale", f"input quantization ({q.input_scale!r}, "
                                 f"{q.input_zero_point}) differs from the output of {prev_field} ({s_prev!r}, "
                                 f"{z_prev})", "a layer's input scale/zero point must equal its producer's output's")
        weighted = isinstance(layer, (Conv2D, Dense))
        arrays = {k: getattr(q, k) for k in _QUANT_ARRAYS}
        if not weighted:
            if any(v is not None for v in arrays.values()):
                raise ModelFileError(path, field, f"a {layer.kind} layer has no weights, but some are set",
                                     "leave weight/bias/weight_scale/multiplier/shift as None")
            if (float(q.output_scale), int(q.output_zero_point)) != (s_prev, z_prev):
                raise ModelFileError(path, f"{field}.output_scale", f"{layer.kind} must keep its input's scale and "
                                     f"zero point ({s_prev!r}, {z_prev}), not ({q.output_scale!r}, "
                                     f"{q.output_zero_point})", "copy the input quantization to the output")
            if (int(q.act_min), int(q.act_max)) != (-128, 127):
                raise ModelFileError(path, f"{field}.act_min", f"a {layer.kind} layer has no clamp, but its bounds "
                                     f"are [{q.act_min}, {q.act_max}]", "use the defaults [-128, 127]")
        else:
            pshape = layer.param_shapes(shape_in)
            filters = pshape["bias"][0]
            want_shapes = {"weight": tuple(pshape["weight"]), "bias": (filters,), "weight_scale": (filters,),
                           "multiplier": (filters,), "shift": (filters,)}
            for key, dtype in _QUANT_ARRAYS.items():
                arr = arrays[key]
                f = f"{layer.name}.{key}"
                if not isinstance(arr, np.ndarray):
                    raise ModelFileError(path, f, f"is missing (got {type(arr).__name__})", _REQUANTIZE_FIX)
                if arr.dtype != dtype:
                    raise ModelFileError(path, f, f"has dtype {arr.dtype}, expected {dtype}",
                                         f"store {key} as {dtype}")
                if arr.shape != want_shapes[key]:
                    raise ModelFileError(path, f, f"has shape {arr.shape}, expected {want_shapes[key]}",
                                         f"layer {layer.name!r} ({layer.kind}) on input {shape_in} needs "
                                         f"{want_shapes[key]}")
            w, m0, shift, w_scale = q.weight, q.multiplier, q.shift, q.weight_scale
            if w.size and (w.min() < -127 or w.max() > 127):
                raise ModelFileError(path, f"{layer.name}.weight", f"values must lie in [-127, 127] (symmetric int8), "
                                     f"found {int(w.min())}..{int(w.max())}", "quantize weights to [-127, 127]")
            if shift.min() < MIN_SHIFT or shift.max() > MAX_SHIFT:
                raise ModelFileError(path, f"{layer.name}.shift", f"values must lie in [{MIN_SHIFT}, {MAX_SHIFT}], "
                                     f"found {int(shift.min())}..{int(shift.max())}",
                                     "recompute with sim.arith.quantize_multiplier")
            bad = (m0 != 0) & (m0 < (1 << 30))
            if np.any(bad):
                c = int(np.flatnonzero(bad)[0])
                raise ModelFileError(path, f"{layer.name}.multiplier", f"channel {c}: M0 = {int(m0[c])} is neither 0 "
                                     f"nor in [2**30, 2**31)", "recompute with sim.arith.quantize_multiplier")
            if not np.all(np.isfinite(w_scale)) or np.any(w_scale <= 0):
                raise ModelFileError(path, f"{layer.name}.weight_scale", "must be finite and positive",
                                     _REQUANTIZE_FIX)
            encoded = m0.astype(np.float64) * np.exp2(shift.astype(np.float64) - 31)
            real = float(q.input_scale) * w_scale / float(q.output_scale)
            off = np.abs(encoded - real) > _MULTIPLIER_RTOL * real
            if np.any(off):
                c = int(np.flatnonzero(off)[0])
                raise ModelFileError(path, f"{layer.name}.multiplier", f"channel {c}: (M0, shift) = ({int(m0[c])}, "
                                     f"{int(shift[c])}) encodes {float(encoded[c])!r}, but S_in * S_w / S_out = "
                                     f"{float(real[c])!r}",
                                     "recompute with sim.arith.quantize_multiplier(S_in * S_w / S_out)")
            if getattr(layer, "relu", False) and q.act_min < q.output_zero_point:
                raise ModelFileError(path, f"{field}.act_min", f"layer has a fused ReLU but act_min {q.act_min} is "
                                     f"below the output zero point {q.output_zero_point}",
                                     "set act_min = output_zero_point")
        s_prev, z_prev, prev_field = float(q.output_scale), int(q.output_zero_point), f"layer {layer.name!r}"


def save_quantized(path, qnet: QuantizedNetwork) -> None:
    """Validate and write a quantized model file (format ``systolic8-int8-1``)."""
    validate_quantized(qnet, path)
    network = qnet.network
    shapes = network.shapes()
    layers_meta = []
    arrays = {}
    for layer, q, shape_in, shape_out in zip(network.layers, qnet.layers, shapes, shapes[1:]):
        layers_meta.append({
            "name": q.name, "kind": q.kind, "input_shape": list(shape_in), "output_shape": list(shape_out),
            "input_scale": float(q.input_scale), "input_zero_point": int(q.input_zero_point),
            "output_scale": float(q.output_scale), "output_zero_point": int(q.output_zero_point),
            "act_min": int(q.act_min), "act_max": int(q.act_max)})
        if q.weight is not None:
            for key in _QUANT_ARRAYS:
                arrays[f"{q.name}.{key}"] = getattr(q, key)
    meta = {"format": INT8_FORMAT, "network": network.to_json(),
            "input": {"scale": float(qnet.input_scale), "zero_point": int(qnet.input_zero_point)},
            "layers": layers_meta}
    if qnet.float_digest is not None:
        meta["float_model"] = {"sha256": str(qnet.float_digest)}
    arrays[_METADATA_KEY] = np.array(json.dumps(meta))
    _write_npz(path, arrays)


def _get(path, obj, key, field, kind):
    if not isinstance(obj, dict):
        raise ModelFileError(path, field, f"must be a JSON object, not {type(obj).__name__}",
                             "re-write the file with sw.model_io.save_quantized")
    if key not in obj:
        raise ModelFileError(path, f"{field}.{key}" if field != _METADATA_KEY else key, f"is missing from the metadata",
                             "re-write the file with sw.model_io.save_quantized")
    value = obj[key]
    checks = {"int": _is_int, "real": _is_real, "str": lambda v: isinstance(v, str),
              "list": lambda v: isinstance(v, list), "dict": lambda v: isinstance(v, dict)}
    if not checks[kind](value):
        raise ModelFileError(path, f"{field}.{key}", f"must be a JSON {kind}, not {value!r}",
                             "re-write the file with sw.model_io.save_quantized")
    return value


def check_pair(float_path, qnet: QuantizedNetwork, int8_path="<int8 model>", *, float_model=None) -> None:
    """Raise :class:`ModelFileError` unless ``qnet`` was quantized from the float model at ``float_path``.

    The int8 file records :func:`sw.quantize.float_digest` of its float model; a file without that record, or
    with another digest, is not paired with ``float_path``. ``float_model`` = ``(network, params)`` already loaded
    from ``float_path`` saves reading it again.
    """
    network, params = float_model if float_model is not None else load_float(float_path)
    if qnet.float_digest is None:
        raise ModelFileError(int8_path, "float_model", f"records no float model, so it cannot be paired with "
                             f"{float_path}", "re-quantize the float model (systolic8 quantize FLOAT --out INT8), "
                             "which records it")
    digest = float_digest(network, params)
    if digest != qnet.float_digest:
        raise ModelFileError(int8_path, "float_model", f"was quantized from another float model than {float_path} "
                             f"(recorded digest {qnet.float_digest[:12]}..., that file's {digest[:12]}...)",
                             "pass the float model it was quantized from, or re-quantize this one "
                             "(systolic8 quantize)")


def load_quantized(path) -> QuantizedNetwork:
    """Read and completely validate a quantized model file."""
    arrays = _read_npz(path)
    if _METADATA_KEY not in arrays and _FORMAT_KEY in arrays:
        _check_format(path, arrays, _FORMAT_KEY, INT8_FORMAT)  # names the float format if that is what it is
    text = _unicode_scalar(path, arrays, _METADATA_KEY, "the quantization metadata",
                           "write quantized models with sw.model_io.save_quantized")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(path, _METADATA_KEY, f"is not valid JSON ({exc})",
                             "re-write the file with sw.model_io.save_quantized") from None
    if not isinstance(meta, dict):
        raise ModelFileError(path, _METADATA_KEY, f"must be a JSON object, not {type(meta).__name__}",
                             "re-write the file with sw.model_io.save_quantized")
    if "format" not in meta:
        raise ModelFileError(path, "format", "is missing from the metadata (no format version)",
                             "re-write the file with sw.model_io.save_quantized")
    if meta["format"] != INT8_FORMAT:
        raise ModelFileError(path, "format", f"is {meta['format']!r}, expected {INT8_FORMAT!r}",
                             f"this reader supports only {INT8_FORMAT}; re-quantize with this version of sw.quantize")
    network = _parse_network(path, "network", _get(path, meta, "network", _METADATA_KEY, "dict"))
    inp = _get(path, meta, "input", _METADATA_KEY, "dict")
    in_scale = _get(path, inp, "scale", "input", "real")
    in_zp = _get(path, inp, "zero_point", "input", "int")
    layers_meta = _get(path, meta, "layers", _METADATA_KEY, "list")
    if len(layers_meta) != len(network.layers):
        raise ModelFileError(path, "layers", f"{len(layers_meta)} layer records for a network of "
                             f"{len(network.layers)} layers", "re-write the file with sw.model_io.save_quantized")

    expected_arrays = {f"{layer.name}.{key}" for layer in network.layers if isinstance(layer, (Conv2D, Dense))
                       for key in _QUANT_ARRAYS}
    present = set(arrays) - {_METADATA_KEY}
    missing = sorted(expected_arrays - present)
    extra = sorted(present - expected_arrays)
    if missing:
        raise ModelFileError(path, "arrays", f"missing {missing}",
                             "every Conv2D/Dense layer needs weight, bias, weight_scale, multiplier and shift")
    if extra:
        raise ModelFileError(path, "arrays", f"unexpected arrays {extra} (the network has no such parameters)",
                             "remove them or fix the network description")

    shapes = network.shapes()
    qlayers = []
    for i, (layer, rec, shape_in, shape_out) in enumerate(zip(network.layers, layers_meta, shapes, shapes[1:])):
        field = f"layers[{i}]"
        values = {}
        for key in _LAYER_FIELDS:
            kind = {"name": "str", "kind": "str", "input_shape": "list", "output_shape": "list",
                    "input_scale": "real", "output_scale": "real"}.get(key, "int")
            values[key] = _get(path, rec, key, field, kind)
        unknown = sorted(set(rec) - set(_LAYER_FIELDS))
        if unknown:
            raise ModelFileError(path, field, f"unknown fields {unknown}",
                                 "re-write the file with sw.model_io.save_quantized")
        if values["name"] != layer.name or values["kind"] != layer.kind:
            raise ModelFileError(path, f"{field}.name", f"record is {values['kind']} {values['name']!r} but the "
                                 f"network's layer {i} is {layer.kind} {layer.name!r}",
                                 "list the layer records in the network's order")
        for key, want in (("input_shape", shape_in), ("output_shape", shape_out)):
            if tuple(values[key]) != tuple(want):
                raise ModelFileError(path, f"{field}.{key}", f"is {values[key]} but the network implies {list(want)}",
                                     "re-write the file with sw.model_io.save_quantized")
        weights = ({key: arrays[f"{layer.name}.{key}"] for key in _QUANT_ARRAYS}
                   if isinstance(layer, (Conv2D, Dense)) else {})
        qlayers.append(QuantizedLayer(
            name=layer.name, kind=layer.kind,
            input_scale=float(values["input_scale"]), input_zero_point=values["input_zero_point"],
            output_scale=float(values["output_scale"]), output_zero_point=values["output_zero_point"],
            act_min=values["act_min"], act_max=values["act_max"], **weights))
    digest = None
    if "float_model" in meta:
        digest = _get(path, _get(path, meta, "float_model", _METADATA_KEY, "dict"), "sha256", "float_model", "str")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ModelFileError(path, "float_model.sha256", f"is not a SHA-256 hex digest: {digest!r}",
                                 "re-quantize the float model (systolic8 quantize)")
    qnet = QuantizedNetwork(network=network, layers=tuple(qlayers), input_scale=in_scale, input_zero_point=in_zp,
                            float_digest=digest)
    validate_quantized(qnet, path)
    qnet.input_scale = float(qnet.input_scale)
    return qnet
