"""Every bad input of docs/errors.md: one clear line naming the cause and the fix, exit status 2, no traceback.

Each case is (the input as docs/errors.md names it, how to make it, the systolic8 command line, the message).
"""

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from sw.apps.cli import format_error, main

ROOT = Path(__file__).resolve().parents[2]
INT8 = str(ROOT / "models" / "mnist_int8.npz")
FLOAT = str(ROOT / "models" / "mnist_float.npz")
DOC = (ROOT / "docs" / "errors.md").read_text()
MNIST = ["run", INT8, "--float-model", FLOAT, "--data", "mnist", "--backend", "cpu", "--no-plot"]


def _save(path, array):
    np.save(path, array)
    return path


def _pickled(tmp):
    np.save(tmp / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return tmp / "obj.npy"


def _write(tmp, name, data):
    (tmp / name).write_bytes(data)
    return tmp / name


def _truncated_model(tmp):
    data = Path(INT8).read_bytes()
    return _write(tmp, "cut_int8.npz", data[: len(data) // 2])


def _idx_pair(tmp, n_images, n_labels):
    images = np.zeros((n_images, 28, 28), np.uint8)
    labels = np.zeros(n_labels, np.uint8)
    head = lambda a: bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    _write(tmp, "x-images-idx3-ubyte", head(images) + images.tobytes())
    return _write(tmp, "x-labels-idx1-ubyte", head(labels) + labels.tobytes())


CASES = [
    ("make mnist N=-5", lambda t: MNIST + ["--n", "-5"],
     r"--n \(N\) must be a positive number of images, not -5"),
    ("make mnist N=0", lambda t: MNIST + ["--n", "0"],
     r"--n \(N\) must be a positive number of images, not 0"),
    ("make mnist N=20000", lambda t: MNIST + ["--n", "20000"],
     r"--n \(N\) is 20,000, but the data holds 10,000 images; pass at most 10000 \(or leave --n \(N\) out for all "
     r"of them\)"),
    ("make mnist ROWS=0", lambda t: MNIST + ["--rows", "0"], r"--rows \(ROWS\) must be an integer from 1 to 255, not 0"),
    ("make mnist ROWS=-1", lambda t: MNIST + ["--rows", "-1"],
     r"--rows \(ROWS\) must be an integer from 1 to 255, not -1"),
    ("make mnist COLS=300", lambda t: MNIST + ["--cols", "300"],
     r"--cols \(COLS\) must be an integer from 1 to 255, not 300"),
    ("make mnist BUS_BYTES=32", lambda t: MNIST + ["--bus-bytes", "32"],
     r"--bus-bytes \(BUS_BYTES\) must be one of 4, 8, 16 \(a 32-, 64- or 128-bit AXI bus\), not 32"),
    ("make mnist BATCH=0", lambda t: MNIST + ["--batch", "0"], r"--batch \(BATCH\) must be an integer from 1 to 65536, not 0"),
    ("make mnist WORKERS=0", lambda t: MNIST + ["--workers", "0"],
     r"--workers \(WORKERS\) must be an integer from 1 to 256, not 0"),
    ("ROWS=0 with a bad N too", lambda t: MNIST + ["--rows", "0", "--n", "-5"], r"--rows \(ROWS\) must be"),
    ("a model file that does not exist", lambda t: ["run", t / "nope.npz", "--random", "1"],
     r"nope\.npz: no such model file; check the path"),
    ("a truncated or corrupt .npz model", lambda t: ["run", _truncated_model(t), "--random", "1"],
     r"cut_int8\.npz: file: is not an \.npz archive|cut_int8\.npz: .*truncated or corrupt.*re-export the model "
     r"\(systolic8 train / quantize\), or restore a shipped one with `git checkout models/`"),
    ("a model of an unknown type", lambda t: ["run", _write(t, "m.pt", b"x"), "--random", "1"],
     r"m\.pt: unknown model type '\.pt'; pass one of \.npz, \.tflite, \.onnx"),
    ("a float model where int8 is expected", lambda t: ["run", FLOAT, "--random", "1"],
     r"mnist_float\.npz: is a float model; the accelerator runs int8 models: systolic8 quantize "),
    ("data of another shape", lambda t: ["run", INT8, "--data", _save(t / "x.npy", np.zeros((2, 32, 32, 3), np.uint8))],
     r"x\.npy: inputs of shape \(32, 32, 3\) per sample \(array \(2, 32, 32, 3\)\), but the model takes \(28, 28, 1\); "
     r"pass data of the model's input shape \(systolic8 info MODEL shows it\)"),
    ("data of another dtype", lambda t: ["run", INT8, "--data", _save(t / "x.npy", np.zeros((2, 28, 28), np.int16))],
     r"x\.npy: inputs are int16, the model takes uint8 or float32 or float64; convert the array"),
    ("an .npy holding pickled objects", lambda t: ["run", INT8, "--data", _pickled(t)],
     r"obj\.npy: holds an object array, which would need unpickling; refused"),
    ("a file that is not IDX", lambda t: ["run", INT8, "--data", _write(t, "x-images-idx3-ubyte", b"hello world")],
     r"not an IDX file \(magic 68656c6c.*pass an IDX, \.npy or \.npz file"),
    ("a truncated IDX file", lambda t: ["run", INT8, "--data", _write(t, "x.idx", bytes([0, 0, 8, 3, 0, 0, 0, 9]))],
     r"x\.idx: truncated IDX header \(8 bytes, 16 needed for rank 3\)"),
    ("labels that do not match the inputs", lambda t: ["run", INT8, "--data", t / "x-images-idx3-ubyte", "--labels",
                                                        _idx_pair(t, 3, 5)],
     r"3 inputs but 5 labels; pass the labels of these inputs"),
    ("--random 0", lambda t: ["run", INT8, "--random", "0"], r"--random must be a positive number of inputs, not 0"),
    ("both --data and --random", lambda t: ["run", INT8, "--random", "2", "--data", "mnist"],
     r"give the inputs with exactly one of --data DATA"),
    ("--compare-reference on a toolkit .npz", lambda t: ["run", INT8, "--random", "1", "--compare-reference",
                                                          "--backend", "cpu", "--no-plot", "--report", t / "r.json"],
     r"a toolkit \.npz model has no other runtime than the toolkit's own"),
    ("quantize --out onto a shipped model", lambda t: ["quantize", FLOAT, "--data", "mnist", "--out", INT8],
     r"mnist_int8\.npz is a model shipped with the toolkit and is not replaced by default; write elsewhere"),
    ("--calibration on an int8 model", lambda t: ["run", ROOT / "models" / "mlperf-tiny" / "dscnn_kws_int8.tflite",
                                                  "--random", "1", "--calibration",
                                                  _save(t / "c.npy", np.zeros((2, 49, 10, 1), np.float32))],
     r"--calibration quantizes a float ONNX model; .*dscnn_kws_int8\.tflite is already an int8 \.tflite model: "
     r"drop --calibration"),
    ("train on data without labels", lambda t: ["train", "--data", _save(t / "x.npy", np.zeros((4, 28, 28), np.uint8)),
                                                "--out", t / "f.npz"],
     r"x\.npy: training needs labels; pass --labels"),
]


@pytest.mark.parametrize("doc, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(doc, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [str(a) for a in argv(tmp_path)]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, f"{doc}: exit status {rc}, stderr {err!r}"
    assert err.count("\n") == 1 and err.startswith(f"systolic8 {args[0]}: error: "), f"{doc}: {err!r}"
    assert re.search(message, err), f"{doc}: {err!r} does not match {message!r}"
    assert "Traceback" not in err


def test_docs_table_lists_every_case():
    for doc, _, _ in CASES:
        assert f"| {doc} |" in DOC, f"docs/errors.md lacks the row for {doc!r}"


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", INT8, "--rows", "eight"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert err == ("systolic8 run: error: argument --rows: 'eight' is not an integer (see systolic8 run --help)\n")


def test_a_damaged_embedded_test_set_says_how_to_restore_it(tmp_path, monkeypatch):
    """The shipped test split ignores MNIST_DIR, so its message must not send the user there."""
    import sw.mnist as mnist
    original = mnist._embedded

    def damaged(name):
        path = tmp_path / f"{name}.gz"
        if not path.exists():
            data = gzip.decompress(original(name).read_bytes())
            path.write_bytes(gzip.compress(data[:-7]))  # cut off the end
        return path

    monkeypatch.setattr(mnist, "_embedded", damaged)
    with pytest.raises(mnist.MnistError) as exc:
        mnist.load_mnist("test")
    text = str(exc.value)
    assert "truncated IDX data" in text and "git checkout sw/data/mnist" in text and "set MNIST_DIR" not in text
    assert "| a damaged copy of the shipped MNIST test set |" in DOC


def test_a_missing_extra_names_the_pip_command():
    exc = ModuleNotFoundError("No module named 'torch'", name="torch")
    assert format_error(exc) == "this needs the Python package 'torch', which is not installed: pip install -e '.[torch]'"
    assert "| a missing optional package |" in DOC


def test_assembler_missing_operand_is_documented():
    from hw.isa import AssemblyError, assemble
    with pytest.raises(AssemblyError) as exc:
        assemble("LOAD buffer=ACT y_size=1")
    assert str(exc.value) in DOC
