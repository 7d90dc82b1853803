"""Model files: round trips, and a clear ModelFileError (file, field, fix) for every kind of bad file."""

import json
import re
import zipfile

import numpy as np
import pytest

from sw.model_io import (FLOAT_FORMAT, INT8_FORMAT, ModelFileError, load_float, load_quantized, save_float,
                         save_quantized, validate_quantized)
from sw.network import mnist_cnn
from sw.quantize import quantize
from sw.reference import int8_forward
from sw.testing import random_images, random_network, random_params


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(42)
    net = random_network(rng, conv_layers=2, dense_layers=2, pool_probability=1.0)
    params = random_params(rng, net, zero_channels=1)
    images = random_images(rng, net, 12)
    return net, params, images, quantize(net, params, images)


def read_arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def write_arrays(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # allow_pickle=True when writing: lets the tests plant object arrays


def expect_error(path, loader, field_pattern, problem_pattern):
    with pytest.raises(ModelFileError) as info:
        loader(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert info.value.path == str(path)
    assert "Fix: " in msg and info.value.fix, msg
    assert re.search(field_pattern, info.value.field), f"field {info.value.field!r} !~ {field_pattern!r}: {msg}"
    assert re.search(problem_pattern, msg), f"{problem_pattern!r} not in {msg!r}"
    return info.value


# ---------------------------------------------------------------------------------------------------------------
# Round trips


def test_float_round_trip(tmp_path, model):
    net, params, _, _ = model
    path = tmp_path / "model.float"  # any name: nothing appends '.npz'
    save_float(path, net, {k: v.astype(np.float64) for k, v in params.items()})
    assert path.exists() and not (tmp_path / "model.float.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.float"]  # no temporary file left behind
    net2, params2 = load_float(path)
    assert net2 == net
    assert params2.keys() == params.keys()
    for k in params:
        assert params2[k].dtype == np.float32 and np.array_equal(params2[k], params[k]), k
    arrays = read_arrays(path)
    assert str(arrays["__format__"]) == FLOAT_FORMAT and arrays["__network__"].dtype.kind == "U"


def test_float_round_trip_mnist(tmp_path):
    net = mnist_cnn()
    params = random_params(np.random.default_rng(0), net)
    save_float(tmp_path / "m.npz", net, params)
    net2, params2 = load_float(tmp_path / "m.npz")
    assert net2 == net and all(np.array_equal(params2[k], params[k]) for k in params)


def test_quantized_round_trip(tmp_path, model):
    net, _, images, qnet = model
    path = tmp_path / "q.npz"
    save_quantized(path, qnet)
    q2 = load_quantized(path)
    assert q2.network == net
    assert (q2.input_scale, q2.input_zero_point) == (qnet.input_scale, qnet.input_zero_point)
    for a, b in zip(qnet.layers, q2.layers):
        for field in ("name", "kind", "input_scale", "input_zero_point", "output_scale", "output_zero_point",
                      "act_min", "act_max"):
            assert getattr(a, field) == getattr(b, field), (a.name, field)
        for field in ("weight", "bias", "weight_scale", "multiplier", "shift"):
            va, vb = getattr(a, field), getattr(b, field)
            assert (va is None and vb is None) or (va.dtype == vb.dtype and np.array_equal(va, vb)), (a.name, field)
    x = qnet.quantize_input(images)
    assert np.array_equal(int8_forward(q2, x), int8_forward(qnet, x))
    meta = json.loads(str(read_arrays(path)["__metadata__"]))
    assert meta["format"] == INT8_FORMAT and [r["name"] for r in meta["layers"]] == [l.name for l in net.layers]


# ---------------------------------------------------------------------------------------------------------------
# Bad quantized files


def first_weighted(net):
    return next(l.name for l in net.layers if l.kind in ("conv2d", "dense"))


def first_pool(net):
    return next(i for i, l in enumerate(net.layers) if l.kind == "maxpool2d")


def mutate_meta(change):
    def apply(arrays, net):
        meta = json.loads(str(arrays["__metadata__"]))
        change(meta, net)
        arrays["__metadata__"] = np.array(json.dumps(meta))
    return apply


def set_array(suffix, value_fn):
    def apply(arrays, net):
        key = f"{first_weighted(net)}.{suffix}"
        arrays[key] = value_fn(arrays[key])
    return apply


def with_value(index, value):
    def fn(a):
        a = a.copy()
        a.flat[index] = value
        return a
    return fn


BAD_QUANTIZED = {
    "missing metadata": (lambda a, n: a.pop("__metadata__"), r"__metadata__", r"is missing"),
    "metadata not unicode": (lambda a, n: a.update(__metadata__=np.arange(3)), r"__metadata__",
                             r"must be a 0-d unicode array, not int64 of shape \(3,\)"),
    "malformed json": (lambda a, n: a.update(__metadata__=np.array("{\"format\": ")), r"__metadata__",
                       r"is not valid JSON"),
    "json not an object": (lambda a, n: a.update(__metadata__=np.array("[1, 2]")), r"__metadata__",
                           r"must be a JSON object, not list"),
    "missing format": (mutate_meta(lambda m, n: m.pop("format")), r"^format$", r"no format version"),
    "wrong format": (mutate_meta(lambda m, n: m.update(format="systolic8-int8-0")), r"^format$",
                     r"is 'systolic8-int8-0', expected 'systolic8-int8-1'"),
    "bad network": (mutate_meta(lambda m, n: m["network"]["layers"][0].update(kind="conv3d")), r"^network$",
                    r"unsupported layer kind 'conv3d'"),
    "missing input": (mutate_meta(lambda m, n: m.pop("input")), r"^input$", r"is missing from the metadata"),
    "input zero point out of int8": (mutate_meta(lambda m, n: m["input"].update(zero_point=-129)),
                                     r"input.zero_point", r"int8 integer in \[-128, 127\], not -129"),
    "input zero point not int": (mutate_meta(lambda m, n: m["input"].update(zero_point=1.5)),
                                 r"input.zero_point", r"must be a JSON int, not 1.5"),
    "input scale negative": (mutate_meta(lambda m, n: m["input"].update(scale=-1.0)), r"input.scale",
                             r"finite positive number, not -1.0"),
    "output zero point out of int8": (mutate_meta(lambda m, n: m["layers"][-1].update(output_zero_point=128)),
                                      r"layers\[\d+\].*output_zero_point", r"not 128"),
    "act_min above act_max": (mutate_meta(lambda m, n: m["layers"][-1].update(act_min=100, act_max=50)),
                              r"act_min", r"act_min 100 exceeds act_max 50"),
    "layer count": (mutate_meta(lambda m, n: m["layers"].pop()), r"^layers$", r"layer records for a network of"),
    "layer order": (mutate_meta(lambda m, n: m["layers"].reverse()), r"layers\[0\]\.name",
                    r"but the network's layer 0 is"),
    "layer field missing": (mutate_meta(lambda m, n: m["layers"][0].pop("output_scale")),
                            r"layers\[0\]\.output_scale", r"is missing"),
    "layer field unknown": (mutate_meta(lambda m, n: m["layers"][0].update(colour="red")), r"layers\[0\]",
                            r"unknown fields \['colour'\]"),
    "layer shape": (mutate_meta(lambda m, n: m["layers"][0].update(input_shape=[1, 2, 3])),
                    r"layers\[0\]\.input_shape", r"is \[1, 2, 3\] but the network implies"),
    "broken scale chain": (mutate_meta(lambda m, n: m["layers"][1].update(
        input_scale=m["layers"][0]["output_scale"] * 2)),
                           r"layers\[1\].*input_scale", r"differs from the output of"),
    "pool changes scale": (mutate_meta(lambda m, n: m["layers"][first_pool(n)].update(
        output_zero_point=m["layers"][first_pool(n)]["output_zero_point"] + 1)),
        r"output_scale", r"must keep its input's scale and zero point"),
    "missing array": (lambda a, n: a.pop(f"{first_weighted(n)}.bias"), r"^arrays$", r"missing \['conv1.bias'\]"),
    "extra array": (lambda a, n: a.update(stowaway=np.zeros(3)), r"^arrays$", r"unexpected arrays \['stowaway'\]"),
    "weight dtype": (set_array("weight", lambda w: w.astype(np.int16)), r"conv1.weight",
                     r"has dtype int16, expected int8"),
    "bias dtype": (set_array("bias", lambda b: b.astype(np.int64)), r"conv1.bias", r"has dtype int64, expected int32"),
    "bias shape": (set_array("bias", lambda b: b[:-1]), r"conv1.bias", r"has shape \(\d+,\), expected \(\d+,\)"),
    "weight shape": (set_array("weight", lambda w: w.reshape(-1, w.shape[-1])), r"conv1.weight",
                     r"has shape .* expected"),
    "weight -128": (set_array("weight", with_value(3, -128)), r"conv1.weight",
                    r"values must lie in \[-127, 127\] \(symmetric int8\), found -128"),
    "shift 32": (set_array("shift", with_value(0, 32)), r"conv1.shift", r"values must lie in \[-31, 31\], found"),
    "shift -32": (set_array("shift", with_value(0, -32)), r"conv1.shift", r"values must lie in \[-31, 31\], found -32"),
    "multiplier below 2**30": (set_array("multiplier", with_value(0, 12345)), r"conv1.multiplier",
                               r"channel 0: M0 = 12345 is neither 0 nor in \[2\*\*30, 2\*\*31\)"),
    "multiplier disagrees with scales": (set_array("multiplier", lambda m: m // 2 + (1 << 30) // 2 + 7),
                                         r"conv1.multiplier", r"encodes .* but S_in \* S_w / S_out"),
    "weight scale zero": (set_array("weight_scale", with_value(0, 0.0)), r"conv1.weight_scale",
                          r"finite and positive"),
    "object array": (lambda a, n: a.update({f"{first_weighted(n)}.bias": np.array([{"x": 1}], dtype=object)}),
                     r"array 'conv1.bias'", r"object array, which would need unpickling; refused"),
}


@pytest.mark.parametrize("case", sorted(BAD_QUANTIZED))
def test_bad_quantized_file(tmp_path, model, case):
    mutate, field, problem = BAD_QUANTIZED[case]
    net = model[0]
    good = tmp_path / "good.npz"
    save_quantized(good, model[3])
    arrays = read_arrays(good)
    mutate(arrays, net)
    bad = tmp_path / "bad.npz"
    write_arrays(bad, arrays)
    expect_error(bad, load_quantized, field, problem)


def test_float_file_to_load_quantized_and_back(tmp_path, model):
    net, params, _, qnet = model
    save_float(tmp_path / "f.npz", net, params)
    save_quantized(tmp_path / "q.npz", qnet)
    err = expect_error(tmp_path / "f.npz", load_quantized, r"__format__",
                       r"format is 'systolic8-float-1', expected 'systolic8-int8-1'")
    assert "load_float" in err.fix
    expect_error(tmp_path / "q.npz", load_float, r"__format__", r"looks like a quantized model file")


@pytest.mark.parametrize("loader", [load_float, load_quantized])
def test_not_a_model_file(tmp_path, loader):
    (tmp_path / "text.npz").write_text("hello, world\n")
    expect_error(tmp_path / "text.npz", loader, r"^file$", r"is not an .npz archive \(not a zip archive\)")
    (tmp_path / "empty.npz").write_bytes(b"")
    expect_error(tmp_path / "empty.npz", loader, r"^file$", r"an empty file")
    np.save(tmp_path / "single.npy", np.zeros(3))
    expect_error(tmp_path / "single.npy", loader, r"^file$", r"a single .npy array")
    expect_error(tmp_path / "absent.npz", loader, r"^file$", r"no such file")
    # A zip archive that is not an npz: a member that is not a .npy array.
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as z:
        z.writestr("readme.txt", "not an array")
    expect_error(tmp_path / "zip.npz", loader, r"member 'readme.txt'", r"is not a NumPy .npy array")


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_files(tmp_path, model, fraction):
    net, params, _, qnet = model
    for name, save, loader in (("f.npz", lambda p: save_float(p, net, params), load_float),
                               ("q.npz", lambda p: save_quantized(p, qnet), load_quantized)):
        path = tmp_path / name
        save(path)
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * fraction)])
        expect_error(path, loader, r"^(file|array .*)$", r"is truncated or corrupt")


# ---------------------------------------------------------------------------------------------------------------
# Bad float files


BAD_FLOAT = {
    "missing format": (lambda a: a.pop("__format__"), r"__format__", r"is missing"),
    "wrong format": (lambda a: a.update(__format__=np.array("systolic8-float-9")), r"__format__",
                     r"format is 'systolic8-float-9', expected 'systolic8-float-1'"),
    "missing network": (lambda a: a.pop("__network__"), r"__network__", r"is missing"),
    "network not unicode": (lambda a: a.update(__network__=np.array(b"{}")), r"__network__",
                            r"must be a 0-d unicode array"),
    "malformed network json": (lambda a: a.update(__network__=np.array("{oops")), r"__network__",
                               r"is not valid JSON"),
    "invalid network": (lambda a: a.update(__network__=np.array('{"input_shape": [4, 4, 1], "layers": []}')),
                        r"__network__", r"invalid network description .*at least one layer"),
    "missing parameter": (lambda a: a.pop("conv1.weight"), r"parameters", r"missing \['conv1.weight'\]"),
    "extra parameter": (lambda a: a.update({"conv9.weight": np.zeros(2, np.float32)}), r"parameters",
                        r"unexpected arrays \['conv9.weight'\]"),
    "float64 parameter": (lambda a: a.update({"conv1.bias": a["conv1.bias"].astype(np.float64)}), r"conv1.bias",
                          r"has dtype float64, expected float32"),
    "wrong shape": (lambda a: a.update({"conv1.weight": a["conv1.weight"][:1]}), r"conv1.weight",
                    r"has shape .* expected"),
    "nan": (lambda a: a.update({"conv1.bias": np.full_like(a["conv1.bias"], np.nan)}), r"conv1.bias",
            r"NaN or infinite"),
    "object array": (lambda a: a.update({"conv1.bias": np.array([None, 1], dtype=object)}), r"array 'conv1.bias'",
                     r"object array"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLOAT))
def test_bad_float_file(tmp_path, model, case):
    mutate, field, problem = BAD_FLOAT[case]
    net, params, _, _ = model
    save_float(tmp_path / "good.npz", net, params)
    arrays = read_arrays(tmp_path / "good.npz")
    mutate(arrays)
    write_arrays(tmp_path / "bad.npz", arrays)
    expect_error(tmp_path / "bad.npz", load_float, field, problem)


# ---------------------------------------------------------------------------------------------------------------
# Saving refuses what loading would refuse


def test_save_float_refuses_bad_params(tmp_path, model):
    net, params, _, _ = model
    path = tmp_path / "f.npz"
    with pytest.raises(ModelFileError, match=r"parameters: missing \['conv1.bias'\]"):
        save_float(path, net, {k: v for k, v in params.items() if k != "conv1.bias"})
    with pytest.raises(ModelFileError, match=r"conv1.weight: has shape \(1,\), expected"):
        save_float(path, net, dict(params, **{"conv1.weight": np.zeros(1)}))
    assert not path.exists()


def test_save_quantized_validates_first(tmp_path, model):
    qnet = model[3]
    layer = next(q for q in qnet.layers if q.weight is not None)
    saved = layer.weight
    layer.weight = saved.copy()
    layer.weight.flat[0] = -128
    try:
        with pytest.raises(ModelFileError, match=r"weight: values must lie in \[-127, 127\]"):
            save_quantized(tmp_path / "q.npz", qnet)
        assert not (tmp_path / "q.npz").exists()
    finally:
        layer.weight = saved
    validate_quantized(qnet)  # the restored network is valid again
