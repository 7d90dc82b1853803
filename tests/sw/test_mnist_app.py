"""`make mnist` end to end: test images through the Verilator RTL backend, bit-identical with the CPU int8 path."""

import json

import pytest

from sw.mnist_app import main, run


def test_mnist_200_images_on_verilator_match_the_cpu_int8_path(tmp_path):
    report = run(backend="verilator", n=200, report_path=tmp_path / "mnist.json", quiet=True, workers=2)
    assert report["mismatches"] == 0, f"images whose RTL logits differ from the CPU int8 path: " \
                                      f"{report['mismatched_images']}"
    assert report["images"] == 200 and report["backend"] == "verilator"
    on_disk = json.loads((tmp_path / "mnist.json").read_text())
    for key in ("images", "backend", "rows", "cols", "accuracy", "mismatches", "cycles_per_image", "layers",
                "wall_s", "sim_cycles_per_s", "workers", "host_fraction"):
        assert key in on_disk, f"mnist.json lacks {key}"
    assert on_disk["workers"] == 2 and 0 < on_disk["host_fraction"] < 1
    assert set(on_disk["accuracy"]) == {"float", "int8_cpu", "int8_backend"}
    assert on_disk["accuracy"]["int8_backend"] == on_disk["accuracy"]["int8_cpu"]
    layers = {layer["name"]: layer for layer in on_disk["layers"]}
    assert set(layers) == {"conv1", "conv2", "dense1", "dense2"}
    for layer in layers.values():
        assert layer["cycles"] > 0 and 0 < layer["utilization"] <= 1
        assert layer["cycles"] >= layer["macs"] / (8 * 8)  # never faster than the array's peak
    assert (tmp_path / "mnist.png").stat().st_size > 1000


def test_mnist_app_rejects_unknown_backend():
    with pytest.raises(SystemExit):
        main(["run", "--backend", "fpga"])


def test_mnist_app_rejects_bad_workers(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--backend", "cpu", "--workers", "0"])
    assert "--workers must be a positive integer, not 0" in capsys.readouterr().err
