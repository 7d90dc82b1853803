"""systolic8 generate: a bundle for a 2x2 accelerator and a tiny random network, its files and its check run."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sw.apps.explore import Point
from sw.apps.generate import SimulatedBus, check_bundle, generate_bundle, load_point, main
from sw.model_io import save_quantized
from sw.quantize import quantize
from sw.testing import random_images, random_network, random_params

SEED = 1807


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    rng = np.random.default_rng(SEED)
    net = random_network(rng, input_shape=(6, 6, 1), conv_layers=1, dense_layers=1, channels=(3,),
                         pool_probability=1.0)
    params = random_params(rng, net)
    qnet = quantize(net, params, random_images(rng, net, 16))
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    save_quantized(path, qnet)
    return path


@pytest.fixture(scope="module")
def bundle(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    config = out.parent / "chosen.json"
    config.write_text(json.dumps({"point": {"rows": 2, "cols": 2, "bus_bytes": 8, "batch": 2}}))
    point = load_point(config)
    manifest = generate_bundle(tiny_model, point, out)
    return out, manifest


def test_bundle_has_every_file(bundle):
    out, manifest = bundle
    for name in ("accelerator_2x2.v", "accelerator_2x2.json", "image.bin", "memory_map.json", "driver.py",
                 "report.json", "check.py", "model.npz"):
        assert (out / name).is_file(), f"{name} missing from the bundle"
        assert name in manifest["files"]
    mm = json.loads((out / "memory_map.json").read_text())
    assert mm["hardware"]["rows"] == 2 and mm["batch"] == 2
    names = [layer["name"] for layer in mm["layers"]]
    assert names and all((out / "programs" / f"{n}.txt").is_file() for n in names)
    # Regions do not overlap and lie inside the image.
    regions = sorted(layer["region"] for layer in mm["layers"])
    for (a0, a1), (b0, b1) in zip(regions, regions[1:]):
        assert a1 <= b0
    assert regions[-1][1] <= mm["image_base"] + mm["image_bytes"]
    hw = json.loads((out / "accelerator_2x2.json").read_text())
    assert {r["name"] for r in hw["registers"]} >= {"CTRL", "STATUS", "PROG_ADDR", "PROG_LEN", "CYCLES"}
    report = json.loads((out / "report.json").read_text())
    assert report["predicted_cycles"]["batch"] == sum(report["predicted_cycles"]["layers"].values())


@pytest.mark.parametrize("backend", ["golden", "verilator"])
def test_check_run_passes(bundle, backend):
    out, _ = bundle
    result = check_bundle(out, backend=backend, batches=2)
    assert result["outputs_equal_reference"], f"seed {SEED}: {result['first_mismatch']}"
    assert result["cycles_equal_prediction"], (result["cycles_measured"], result["cycles_predicted"])
    assert result["ok"] and result["inputs"] == 4


def test_check_script_runs_standalone(bundle):
    out, _ = bundle
    done = subprocess.run([sys.executable, str(out / "check.py"), "--backend", "golden"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True


def test_driver_reports_error_codes(bundle):
    out, _ = bundle
    sys.path.insert(0, str(out))
    try:
        import driver
    finally:
        sys.path.remove(str(out))
    b = driver.Bundle(out)
    bus = SimulatedBus(Point(2, 2).config, backend="golden", dram_bytes=1 << 20)
    acc = b.load(bus)
    layer = next(iter(b.layers.values()))
    with pytest.raises(driver.AcceleratorError, match="error code"):
        acc.run(layer["prog_addr"], 1)          # PROG_LEN 1: the program overruns
    wrong = SimulatedBus(Point(4, 4).config, backend="golden", dram_bytes=1 << 20)
    with pytest.raises(driver.AcceleratorError, match="not the bundle's"):
        b.load(wrong)


def test_bad_config_is_one_line(tmp_path, tiny_model, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": 2}))
    assert main([str(tiny_model), "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rows" in err
