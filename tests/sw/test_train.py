"""sw.train: the torch model follows the description's NHWC/HWIO conventions, training runs and is seeded, the export
round-trips, and the committed float model reaches 99% under an independent NumPy forward pass."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sw.mnist import images_to_float, load_mnist
from sw.network import Conv2D, Dense, Flatten, MaxPool2D, Network, mnist_cnn
from sw.train import (FLOAT_FORMAT, TorchNetwork, evaluate, export_float, main, params_from_torch, predict_logits,
                      torch_from_params, train)

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "models" / "mnist_float.npz"

torch.set_num_threads(2)


def numpy_forward(network: Network, params: dict, x: np.ndarray) -> np.ndarray:
    """Float64 forward pass written from the description's conventions alone (NHWC, HWIO, (in, out) dense)."""
    x = np.asarray(x, dtype=np.float64)
    for layer in network.layers:
        if isinstance(layer, Conv2D):
            w = params[f"{layer.name}.weight"].astype(np.float64)
            top, bottom, left, right = layer.padding_amounts(x.shape[1], x.shape[2])
            x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
            kh, kw, c, o = w.shape
            win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N, OH, OW, C, kh, kw
            win = win[:, ::layer.stride[0], ::layer.stride[1]].transpose(0, 1, 2, 4, 5, 3)
            x = win.reshape(*win.shape[:3], kh * kw * c) @ w.reshape(kh * kw * c, o) + params[f"{layer.name}.bias"]
        elif isinstance(layer, MaxPool2D):
            win = np.lib.stride_tricks.sliding_window_view(x, layer.pool, axis=(1, 2))
            x = win[:, ::layer.stride[0], ::layer.stride[1]].max(axis=(-2, -1))
        elif isinstance(layer, Flatten):
            x = x.reshape(len(x), -1)
        elif isinstance(layer, Dense):
            x = x @ params[f"{layer.name}.weight"].astype(np.float64) + params[f"{layer.name}.bias"]
        if getattr(layer, "relu", False):
            x = np.maximum(x, 0)
    return x


def batched_forward(network, params, x, batch=500):
    return np.concatenate([numpy_forward(network, params, x[i:i + batch]) for i in range(0, len(x), batch)])


def assert_logits_close(actual, expected, what):
    err = np.abs(actual - expected)
    worst = tuple(int(i) for i in np.unravel_index(err.argmax(), err.shape))
    assert err.max() <= 1e-4, (f"{what}: max |diff| {err.max():.3e} at {worst}: "
                               f"{actual[worst]!r} vs {expected[worst]!r}")


@pytest.fixture(scope="module")
def test_set():
    images, labels = load_mnist("test")
    return images_to_float(images), labels


def small_network():
    # Odd sizes, 'same' padding and strides catch layout mistakes the MNIST network alone would not.
    return Network((9, 7, 2), (Conv2D("c1", 3, (3, 2), stride=(2, 1), padding="same", relu=True),
                               MaxPool2D("p1", 2, stride=1), Conv2D("c2", 4, 2), Flatten("f"),
                               Dense("d1", 5, relu=True), Dense("d2", 3)))


@pytest.mark.parametrize("make", [small_network, mnist_cnn])
def test_torch_layout_matches_numpy_forward(make):
    network = make()
    torch.manual_seed(11)
    model = TorchNetwork(network).eval()
    params = params_from_torch(model)
    assert {k: v.shape for k, v in params.items()} == network.param_shapes()
    assert all(v.dtype == np.float32 for v in params.values())
    x = np.random.default_rng(11).random((6, *network.input_shape), dtype=np.float32)
    assert_logits_close(predict_logits(model, x), numpy_forward(network, params, x), f"{make.__name__} seed 11")
    # torch_from_params is the exact inverse of params_from_torch.
    again = params_from_torch(torch_from_params(network, params))
    for key in params:
        np.testing.assert_array_equal(again[key], params[key], err_msg=key)


def test_torch_from_params_rejects_bad_params():
    network = small_network()
    params = params_from_torch(TorchNetwork(network))
    with pytest.raises(ValueError, match=r"missing \['d2.bias'\]"):
        torch_from_params(network, {k: v for k, v in params.items() if k != "d2.bias"})
    with pytest.raises(ValueError, match=r"'c2.weight' has shape \(2, 2, 4, 3\), the network needs \(2, 2, 3, 4\)"):
        torch_from_params(network, {**params, "c2.weight": params["c2.weight"].transpose(0, 1, 3, 2)})


def test_train_smoke_and_export(tmp_path, test_set):
    """A fraction of an epoch on 2000 images lowers the loss; the export round-trips and matches torch."""
    x_test, y_test = test_set
    images, labels = load_mnist("test")  # the embedded split: no MNIST_DIR needed
    x, y = images_to_float(images[:2000]), labels[:2000]
    network = mnist_cnn()
    torch.manual_seed(0)
    loss_before, _ = evaluate(TorchNetwork(network), x, y)
    model, history = train(network, x, y, epochs=0.75, batch_size=64, seed=0, log=None)
    loss_after, _ = evaluate(model, x, y)
    assert len(history) == 1 and history[0]["steps"] == 24
    assert loss_after < 0.7 * loss_before, f"seed 0: loss {loss_before:.4f} -> {loss_after:.4f}"

    path = tmp_path / "float.npz"
    export_float(path, model)
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        assert keys == set(network.param_shapes()) | {"__network__", "__format__"}
        assert npz["__format__"].dtype.kind == "U" and str(npz["__format__"]) == FLOAT_FORMAT
        assert npz["__network__"].dtype.kind == "U"
        loaded_network = Network.from_json(json.loads(str(npz["__network__"])))
        params = {k: npz[k] for k in keys if not k.startswith("__")}
    assert loaded_network == network
    for key, shape in network.param_shapes().items():
        assert params[key].dtype == np.float32 and params[key].shape == shape, key
    assert_logits_close(numpy_forward(network, params, x_test[:32]), predict_logits(model, x_test[:32]),
                        "exported smoke model, test images 0-31")
    if importlib.util.find_spec("sw.model_io") is not None:  # the shared loader must read the same file
        from sw.model_io import load_float
        io_network, io_params = load_float(path)
        assert io_network == network
        for key in params:
            np.testing.assert_array_equal(np.asarray(io_params[key]), params[key], err_msg=key)


def test_training_is_seeded():
    images, labels = load_mnist("test")
    x, y = images_to_float(images[:512]), labels[:512]
    runs = [params_from_torch(train(mnist_cnn(), x, y, epochs=1, batch_size=128, seed=seed, augment=2, dropout=0.25,
                                    log=None)[0]) for seed in (3, 3, 4)]
    for key in runs[0]:
        np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=f"seed 3 twice, {key}")
    assert not np.array_equal(runs[0]["dense2.weight"], runs[2]["dense2.weight"]), "seeds 3 and 4 trained alike"


def test_train_rejects_bad_arguments():
    x = np.zeros((4, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match=r"epochs must be positive, not 0"):
        train(mnist_cnn(), x, np.zeros(4, np.uint8), epochs=0)
    with pytest.raises(ValueError, match=r"got 4 and 3"):
        train(mnist_cnn(), x, np.zeros(3, np.uint8))


def test_cli(tmp_path, capsys, shared_mnist):
    out = tmp_path / "m" / "cli.npz"
    assert main(["--epochs", "0.5", "--subset", "256", "--out", str(out), "--mnist-dir", str(shared_mnist)]) == 0
    printed = capsys.readouterr().out
    assert "training 256 images" in printed and "epoch 1: loss" in printed and "float test accuracy" in printed
    with np.load(out, allow_pickle=False) as npz:
        assert str(npz["__format__"]) == FLOAT_FORMAT


def test_committed_float_model(test_set):
    """models/mnist_float.npz: >= 99.0% on the 10k test set with the NumPy forward pass, agreeing with torch."""
    x_test, y_test = test_set
    with np.load(COMMITTED, allow_pickle=False) as npz:
        assert str(npz["__format__"]) == FLOAT_FORMAT
        network = Network.from_json(json.loads(str(npz["__network__"])))
        params = {k: npz[k] for k in npz.files if not k.startswith("__")}
    assert network == mnist_cnn()
    logits = batched_forward(network, params, x_test)
    torch_logits = predict_logits(torch_from_params(network, params), x_test)
    assert_logits_close(torch_logits, logits, "committed model, 10k test images")
    accuracy = float((logits.argmax(1) == y_test).mean())
    assert accuracy >= 0.99, f"committed float model: {100 * accuracy:.2f}% < 99.00% on the 10k test set"
    assert np.array_equal(logits.argmax(1), torch_logits.argmax(1)), "NumPy and torch disagree on a prediction"
