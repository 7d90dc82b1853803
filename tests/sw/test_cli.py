"""The systolic8 command: subcommand table, info, run on every kind of data, train/quantize and model pairing."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sw.apps import cli
from sw.apps.cli import main

ROOT = Path(__file__).resolve().parents[2]
INT8 = str(ROOT / "models" / "mnist_int8.npz")
FLOAT = str(ROOT / "models" / "mnist_float.npz")


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_every_registered_command(capsys):
    rc, out, _ = run_cli(capsys, "--help")
    assert rc == 0
    for name in ("info", "run", "train", "quantize", "explore", "generate", "asic"):
        assert name in cli.COMMANDS and f"  {name}" in out
    assert cli.COMMANDS["explore"][0] == "sw.apps.explore" and cli.COMMANDS["generate"][0] == "sw.apps.generate"
    assert cli.COMMANDS["asic"][0] == "hw.asic.cli"


def test_pyproject_declares_the_console_script():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'systolic8 = "sw.apps.cli:main"' in text


def test_absent_component_is_named(capsys, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "frobnicate", ("sw.apps.no_such_module", "the frobnicator (sw/apps/x.py)", "x"))
    rc, _, err = run_cli(capsys, "frobnicate")
    assert rc == 2
    assert err == ("systolic8 frobnicate: error: 'frobnicate' is provided by the frobnicator (sw/apps/x.py), which is "
                   "not part of this checkout (no module sw.apps.no_such_module); install or merge that component\n")


def test_unknown_command_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frob"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'frob'" in err


def test_info_lists_layers_with_exact_cycle_model_cycles(capsys):
    from sw.compiler import compile_network
    from sw.model_io import load_quantized
    from sw.apps.options import hardware_config
    rc, out, _ = run_cli(capsys, "info", INT8, "--rows", 4, "--cols", 8, "--batch", 8)
    assert rc == 0
    predicted = compile_network(load_quantized(INT8), hardware_config(4, 8)).predicted_cycles(8)
    lines = {line.split()[0]: line for line in out.splitlines()[2:-1]}
    assert list(lines) == ["conv1", "pool1", "conv2", "pool2", "flatten", "dense1", "dense2"]
    for name, cycles in predicted.items():
        assert f"{round(cycles / 8):,}" in lines[name].split() and "accelerator" in lines[name], lines[name]
    assert "host" in lines["pool1"] and "26x26x32" in lines["pool1"] and "13x13x32" in lines["pool1"]
    assert "194,688" in lines["conv1"]  # 26*26 outputs x 32 filters x 9 taps
    total = sum(predicted.values()) / 8
    assert f"{total:,.0f} predicted cycles per input" in out.splitlines()[-1]


def test_info_json(capsys):
    rc, out, _ = run_cli(capsys, "info", INT8, "--json")
    records = json.loads(out)["layers"]
    assert rc == 0 and [r["name"] for r in records][:2] == ["conv1", "pool1"]
    assert records[0]["macs"] == 26 * 26 * 32 * 9 and records[1]["cycles"] is None


def test_run_mnist_matches_mnist_app(capsys, tmp_path):
    """`make mnist`'s command line and sw.mnist_app.run give the same summary and report."""
    from sw.mnist_app import run as mnist_run
    rc, out, _ = run_cli(capsys, "run", INT8, "--float-model", FLOAT, "--data", "mnist", "--n", 40, "--backend",
                         "model", "--report", tmp_path / "a.json")
    assert rc == 0
    mnist_run(backend="model", n=40, report_path=tmp_path / "b.json")
    out_b = capsys.readouterr().out
    strip = lambda text: [l for l in text.splitlines() if not l.startswith(("  wall", "wrote"))]
    assert strip(out) == strip(out_b)
    assert out.startswith("MNIST: 40 test images on model (8x8 array, batch 32)\n")
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab")
    assert a["layers"] == [{**l, "wall_s": a["layers"][i]["wall_s"], "host_s": a["layers"][i]["host_s"],
                            "sim_s": a["layers"][i]["sim_s"]} for i, l in enumerate(b["layers"])]
    assert a["mismatches"] == 0 and a["accuracy"] == b["accuracy"] and a["accuracy"]["float"] is not None
    assert (tmp_path / "a.png").stat().st_size > 1000


def _idx(array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_run_on_any_idx_data_set_with_mnist_names(capsys, tmp_path):
    """Fashion-MNIST ships under MNIST's own file names: structure is checked, the MNIST checksum is not."""
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 12, dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(images))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(labels))
    from sw.mnist import MnistError, read_idx
    with pytest.raises(MnistError, match="SHA-256"):
        read_idx(tmp_path / "t10k-images-idx3-ubyte")
    rc, out, _ = run_cli(capsys, "run", INT8, "--data", tmp_path, "--backend", "cpu", "--report", tmp_path / "r.json")
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["images"] == 12 and report["mismatches"] == 0
    # accuracy derived here from the CPU int8 path on the same images
    from sw.driver import Driver
    from sw.model_io import load_quantized
    predictions = Driver(load_quantized(INT8), backend="cpu").run(images).predictions
    assert report["accuracy"]["int8_cpu"] == pytest.approx(np.mean(predictions == labels))


def test_run_npy_and_npz_and_random_on_golden(capsys, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(5))
    for data in ("x.npy", "xy.npz"):
        rc, out, _ = run_cli(capsys, "run", INT8, "--data", tmp_path / data, "--backend", "golden", "--report",
                             tmp_path / "r.json")
        assert rc == 0 and "mismatches vs the CPU int8 path: 0 inputs" in out, out
        assert ("accuracy" in out) == (data == "xy.npz")
    rc, out, _ = run_cli(capsys, "run", INT8, "--random", 6, "--seed", 2, "--backend", "golden", "--report",
                         tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert rc == 0 and report["images"] == 6 and report["mismatches"] == 0
    assert report["data"] == "6 random uint8 inputs (seed 2)"


def test_golden_run_removes_a_stale_plot(capsys, tmp_path):
    png = tmp_path / "r.png"
    png.write_bytes(b"old plot")
    rc, out, _ = run_cli(capsys, "run", INT8, "--random", 2, "--backend", "golden", "--report", tmp_path / "r.json")
    assert rc == 0 and not png.exists()
    assert f"no cycles on the golden backend: no plot; removed the previous {png}" in out


def test_gpu_header_says_where_it_ran(capsys, tmp_path):
    import torch
    rc, out, err = run_cli(capsys, "run", INT8, "--random", 3, "--backend", "gpu", "--report", tmp_path / "r.json")
    assert rc == 0
    header = out.splitlines()[0]
    if torch.cuda.is_available():
        assert " on gpu (8x8 array" in header
    else:
        assert " on gpu (no CUDA: PyTorch on the CPU) (8x8 array" in header and "no CUDA GPU found" in err


def _other_pair(tmp_path):
    """A float model that is not the shipped one (dense2 bias moved) and its int8 model."""
    from sw.model_io import load_float, save_float, save_quantized
    from sw.quantize import quantize
    from sw.reference import images_to_float
    from sw.mnist import load_mnist
    network, params = load_float(FLOAT)
    params = dict(params)
    params["dense2.bias"] = params["dense2.bias"] + np.float32(0.5)
    save_float(tmp_path / "other_float.npz", network, params)
    images, _ = load_mnist("test")
    qnet = quantize(network, params, images_to_float(images[:64]))
    save_quantized(tmp_path / "other_int8.npz", qnet)
    return tmp_path / "other_float.npz", tmp_path / "other_int8.npz"


def test_mismatched_float_int8_pair_is_an_error(capsys, tmp_path):
    other_float, other_int8 = _other_pair(tmp_path)
    from sw.mnist_app import main as mnist_main
    rc = mnist_main(["run", "--backend", "cpu", "--n", "10", "--model", str(other_int8), "--report",
                     str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "other_int8.npz: float_model: was quantized from another float model than" in err and "mnist_float" in err
    rc, _, err = run_cli(capsys, "run", other_int8, "--float-model", FLOAT, "--data", "mnist", "--n", 5)
    assert rc == 2 and "was quantized from another float model" in err
    # its own float model pairs (found beside it by name and digest)
    rc, out, _ = run_cli(capsys, "run", other_int8, "--data", "mnist", "--n", 5, "--backend", "cpu", "--report",
                         tmp_path / "o.json")
    assert rc == 0 and json.loads((tmp_path / "o.json").read_text())["float_model"] == str(other_float)


def test_int8_without_a_recorded_float_model_is_not_paired(capsys, tmp_path):
    from sw.model_io import load_quantized, save_quantized
    qnet = load_quantized(INT8)
    qnet.float_digest = None
    save_quantized(tmp_path / "old_int8.npz", qnet)
    rc, _, err = run_cli(capsys, "run", tmp_path / "old_int8.npz", "--float-model", FLOAT, "--data", "mnist", "--n", 3)
    assert rc == 2 and "records no float model, so it cannot be paired" in err and "systolic8 quantize" in err


def test_quantize_pairs_and_never_replaces_shipped_models(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "quantize", FLOAT, "--data", "mnist", "--split", "test", "--out", INT8)
    assert rc == 2 and "is a model shipped with the toolkit and is not replaced by default" in err
    out8 = tmp_path / "q_int8.npz"
    rc, out, _ = run_cli(capsys, "quantize", FLOAT, "--data", "mnist", "--split", "test", "--calibration", 128,
                         "--out", out8)
    assert rc == 0 and f"wrote {out8}" in out
    from sw.model_io import check_pair, load_quantized
    check_pair(FLOAT, load_quantized(out8), out8)


def test_train_writes_where_told(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 64)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    rc, _, err = run_cli(capsys, "train", "--data", tmp_path / "train.npz", "--epochs", 0.5, "--out", FLOAT)
    assert rc == 2 and "not replaced by default" in err
    rc, out, _ = run_cli(capsys, "train", "--data", tmp_path / "train.npz", "--epochs", 0.5, "--batch-size", 32,
                         "--out", tmp_path / "f.npz")
    assert rc == 0 and f"wrote {tmp_path / 'f.npz'}" in out
    from sw.model_io import load_float
    network, params = load_float(tmp_path / "f.npz")
    assert network.input_shape == (28, 28, 1) and params["dense2.bias"].shape == (10,)


def test_debug_prints_the_traceback(tmp_path):
    env_cmd = [sys.executable, "-m", "sw.apps.cli", "run", INT8, "--random", "2", "--rows", "0"]
    plain = subprocess.run(env_cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    debug = subprocess.run(env_cmd + ["--debug"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and plain.stderr == ("systolic8 run: error: --rows (ROWS) must be an integer from 1 "
                                                      "to 255, not 0\n")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "CliError: --rows (ROWS) must be an integer from 1 to 255, not 0" in debug.stderr


def test_a_bug_keeps_its_traceback(capsys, monkeypatch):
    import sw.apps.info as info

    def broken(args):
        return np.zeros(2).reshape(3)  # a ValueError from inside NumPy: a bug, not a user error

    monkeypatch.setattr(info, "run", broken)
    rc, _, err = run_cli(capsys, "info", INT8)
    assert rc == 1 and "Traceback" in err and "internal error (a bug" in err


def test_cycle_model_probes_leave_no_unused_elaboratable_warnings():
    """The cycle model builds hardware blocks to read their latency properties; nothing may warn about them."""
    code = ("import gc; from hw.isa import HardwareConfig; from sim.cycle_model import _timing; "
            "_timing(HardwareConfig(rows=3, cols=5, bus_bytes=4)); gc.collect(); print('ok')")
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr
    assert "UnusedElaboratable" not in done.stderr and "Warning" not in done.stderr, done.stderr


def _tiny(name):
    """An MLPerf Tiny model: the repository's copy, else the shared one beside the checkout."""
    for folder in (ROOT / "models" / "mlperf-tiny", ROOT.parent / "shared" / "models" / "mlperf-tiny",
                   ROOT.parents[1] / "shared" / "models" / "mlperf-tiny"):
        if (folder / name).is_file():
            return folder / name
    raise AssertionError(f"{name} is neither in models/mlperf-tiny nor in ../shared/models/mlperf-tiny")


def test_info_and_run_a_tflite_model_against_litert(capsys, tmp_path):
    model = _tiny("dscnn_kws_int8.tflite")
    rc, out, _ = run_cli(capsys, "info", model, "--batch", 1)
    assert rc == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:-1]}
    assert "host" in rows["depthwise_conv_2d_1"].split() and "accelerator" in rows["conv_2d_0"].split()
    assert "72,000" in rows["depthwise_conv_2d_1"].split()  # 25x5 outputs x 64 channels x 3x3 taps
    rc, out, _ = run_cli(capsys, "run", model, "--random", 3, "--seed", 5, "--backend", "cpu", "--compare-reference",
                         "--report", tmp_path / "k.json")
    report = json.loads((tmp_path / "k.json").read_text())
    assert rc == 0 and report["reference"]["mismatched_elements"] == 0 and report["reference"]["elements"] == 36
    assert "vs LiteRT (BUILTIN_REF kernels): 0 of 36 output elements differ" in out
    assert report["data"] == "3 random int8 inputs (seed 5)"


def test_make_targets_are_thin_wrappers_of_the_command():
    """make mnist runs systolic8 run on the shipped pair (so the float model is checked against the int8 one);
    make train writes build/models unless told otherwise."""
    make = (ROOT / "Makefile").read_text()
    mnist = make.split("\nmnist:", 1)[1].split("\n\n", 1)[0]
    assert "-m sw.apps.cli run models/mnist_int8.npz --float-model models/mnist_float.npz --data mnist" in mnist
    assert "--report build/reports/mnist.json" in mnist and "--n $(N)" in mnist and "--rows $(ROWS)" in mnist
    train = make.split("\ntrain:", 1)[1].split("\n\n", 1)[0]
    assert "-m sw.apps.cli train" in train and "-m sw.apps.cli quantize" in train
    assert "MODEL_DIR ?= build/models" in make and "$(if $(FORCE),--force)" in train
