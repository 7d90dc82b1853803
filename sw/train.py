"""Train the float reference network on MNIST with PyTorch (CPU) and export it in the toolkit's float layout.

Usage::

    python -m sw.train --epochs 8 --out build/models/mnist_float.npz [--subset K] [--seed 0]

The torch model is built from a :class:`sw.network.Network` and follows its conventions exactly: it takes NHWC float
input (:func:`sw.mnist.images_to_float`), and a Flatten permutes the activation to NHWC before flattening, so the
exported weights are the torch ones re-laid out - Conv2D ``(O, I, kh, kw)`` -> HWIO ``(kh, kw, I, O)``, Dense
``(out, in)`` -> ``(in, out)`` - with no reordering of Dense rows.

The export is an ``.npz`` readable with ``allow_pickle=False``: one float32 array per parameter
(``"<layer>.weight"``, ``"<layer>.bias"``), the network description as JSON text under ``"__network__"`` and
``"__format__" = "systolic8-float-1"``. It is written by ``sw.model_io.save_float`` when that module exists.

Training is reproducible for a given seed and thread count: torch's generator is seeded, the data order comes from a
seeded NumPy generator, and torch runs deterministic algorithms on two threads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .mnist import images_to_float, load_mnist
from .network import Conv2D, Dense, Flatten, MaxPool2D, Network, mnist_cnn

__all__ = [
    "FLOAT_FORMAT", "TorchNetwork", "params_from_torch", "torch_from_params", "train", "evaluate", "predict_logits",
    "save_float_npz", "export_float", "main",
]

FLOAT_FORMAT = "systolic8-float-1"
THREADS = 2


class TorchNetwork(nn.Module):
    """A :class:`~sw.network.Network` as a torch module: NHWC float input ``(N, H, W, C)``, logits out.

    ``dropout`` (training only; identity in ``eval()``) is applied to the input of every Dense layer. It is not
    part of the network description because inference never sees it.
    """

    def __init__(self, network: Network, *, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
        self.network = network
        self.dropout = dropout
        self.layer_modules = nn.ModuleDict()
        for layer, shape in zip(network.layers, network.shapes()):
            if isinstance(layer, Conv2D):
                self.layer_modules[layer.name] = nn.Conv2d(shape[2], layer.filters, layer.kernel, layer.stride)
            elif isinstance(layer, Dense):
                self.layer_modules[layer.name] = nn.Linear(shape[0], layer.units)
            elif not isinstance(layer, (MaxPool2D, Flatten)):
                raise ValueError(f"Layer {layer.name!r}: TorchNetwork has no mapping for {type(layer).__name__}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
        shapes = self.network.shapes()
        for layer, shape in zip(self.network.layers, shapes):
            if isinstance(layer, Conv2D):
                top, bottom, left, right = layer.padding_amounts(shape[0], shape[1])
                if top or bottom or left or right:
                    x = F.pad(x, (left, right, top, bottom))
                x = self.layer_modules[layer.name](x)
            elif isinstance(layer, MaxPool2D):
                x = F.max_pool2d(x, layer.pool, layer.stride)
            elif isinstance(layer, Flatten):
                x = x.permute(0, 2, 3, 1).flatten(1)  # the description flattens in NHWC order
            elif isinstance(layer, Dense):
                x = F.dropout(x, self.dropout, self.training)
                x = self.layer_modules[layer.name](x)
            if getattr(layer, "relu", False):
                x = F.relu(x)
        return x


def params_from_torch(model: TorchNetwork) -> dict[str, np.ndarray]:
    """The model's parameters in the description's layout (HWIO conv weights, (in, out) dense weights), float32."""
    params = {}
    for layer in model.network.layers:
        if isinstance(layer, (Conv2D, Dense)):
            module = model.layer_modules[layer.name]
            weight = module.weight.detach().cpu()
            weight = weight.permute(2, 3, 1, 0) if isinstance(layer, Conv2D) else weight.t()
            params[f"{layer.name}.weight"] = np.ascontiguousarray(weight.numpy(), dtype=np.float32)
            params[f"{layer.name}.bias"] = module.bias.detach().cpu().numpy().astype(np.float32)
    return params


def torch_from_params(network: Network, params: dict) -> TorchNetwork:
    """A :class:`TorchNetwork` holding ``params`` (description layout); the inverse of :func:`params_from_torch`."""
    model = TorchNetwork(network)
    expected = network.param_shapes()
    if set(params) != set(expected):
        raise ValueError(f"Parameters do not match the network: missing {sorted(set(expected) - set(params))}, "
                         f"unexpected {sorted(set(params) - set(expected))}")
    with torch.no_grad():
        for key, shape in expected.items():
            value = np.asarray(params[key], dtype=np.float32)
            if value.shape != shape:
                raise ValueError(f"Parameter {key!r} has shape {value.shape}, the network needs {shape}")
            name, kind = key.rsplit(".", 1)
            tensor = torch.from_numpy(value.copy())
            if kind == "weight":
                tensor = tensor.permute(3, 2, 0, 1) if tensor.ndim == 4 else tensor.t()
            getattr(model.layer_modules[name], kind).copy_(tensor)
    return model.eval()


def predict_logits(model: TorchNetwork, images: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
    """Float32 logits ``(N, classes)`` for NHWC float images, in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out.append(model(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.network.output_shape[0]), np.float32)


def evaluate(model: TorchNetwork, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over NHWC float images and integer labels."""
    logits = torch.from_numpy(predict_logits(model, images))
    target = torch.from_numpy(labels.astype(np.int64))
    loss = F.cross_entropy(logits, target).item()
    accuracy = (logits.argmax(1) == target).double().mean().item()
    return loss, accuracy


def _shift(batch: torch.Tensor, rng: np.random.Generator, max_shift: int) -> torch.Tensor:
    """Move each NHWC image by up to ``max_shift`` pixels in x and y, filling with zeros (background)."""
    n, h, w, _ = batch.shape
    pad = F.pad(batch.permute(0, 3, 1, 2), (max_shift,) * 4)
    dy = rng.integers(0, 2 * max_shift + 1, n)
    dx = rng.integers(0, 2 * max_shift + 1, n)
    rows = torch.from_numpy(dy[:, None] + np.arange(h)[None, :])  # (n, h)
    cols = torch.from_numpy(dx[:, None] + np.arange(w)[None, :])  # (n, w)
    index = torch.arange(n)[:, None, None]
    return pad[:, 0][index, rows[:, :, None], cols[:, None, :]][..., None]


def train(network: Network, images: np.ndarray, labels: np.ndarray, *, epochs: float = 4, batch_size: int = 128,
          lr: float = 1e-3, seed: int = 0, augment: int = 0, dropout: float = 0.0,
          eval_data: tuple[np.ndarray, np.ndarray] | None = None, log=print) -> tuple[TorchNetwork, list[dict]]:
    """Train a :class:`TorchNetwork` with Adam and cross-entropy; return it (in eval mode) and one record per epoch.

    Parameters
    ----------
    network : Network
        The description to train.
    images, labels : numpy.ndarray
        NHWC float32 training images (:func:`sw.mnist.images_to_float`) and their integer labels.
    epochs : float
        Passes over the data; a fraction stops part-way through the last pass (``0.25`` = a quarter epoch).
    batch_size, lr : int, float
        Mini-batch size and Adam learning rate (decayed by cosine annealing to zero over the run).
    seed : int
        Seeds torch (initialisation, dropout) and the NumPy generator that orders the data and draws shifts.
    augment : int
        Largest random shift in pixels applied to training images (0: none).
    dropout : float
        Dropout on the inputs of Dense layers during training.
    eval_data : (images, labels), optional
        Evaluated after every epoch; its loss and accuracy go into the record and the progress line.
    log : callable or None
        Receives one progress line per epoch.
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, not {epochs!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many labels as images and at least one image, got {len(images)} and {len(labels)}")
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = TorchNetwork(network, dropout=dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    total_steps = max(1, round(epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    history, step, epoch = [], 0, 0
    while step < total_steps:
        epoch += 1
        start = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(len(images)))
        loss_sum, correct, seen = 0.0, 0, 0
        for first in range(0, len(images), batch_size):
            if step == total_steps:
                break
            index = order[first:first + batch_size]
            x, y = x_all[index], y_all[index]
            if augment:
                x = _shift(x, rng, augment)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(index)
        record = {"epoch": epoch, "steps": step, "loss": loss_sum / seen, "accuracy": correct / seen}
        line = f"epoch {epoch}: loss {record['loss']:.4f}  train acc {100 * record['accuracy']:.2f}%"
        if eval_data is not None:
            record["eval_loss"], record["eval_accuracy"] = evaluate(model, *eval_data)
            line += f"  test loss {record['eval_loss']:.4f}  test acc {100 * record['eval_accuracy']:.2f}%"
        record["seconds"] = time.perf_counter() - start
        line += f"  {record['seconds']:.1f} s"
        history.append(record)
        if log is not None:
            log(line)
    return model.eval(), history


def save_float_npz(path, network: Network, params: dict) -> None:
    """Write the float layout (see the module docstring) directly with NumPy."""
    arrays = {key: np.asarray(value, dtype=np.float32) for key, value in params.items()}
    arrays["__network__"] = np.array(network.dumps())
    arrays["__format__"] = np.array(FLOAT_FORMAT)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def export_float(path, model: TorchNetwork) -> str:
    """Export ``model`` to ``path`` with ``sw.model_io.save_float`` if it exists, else :func:`save_float_npz`.

    Returns the writer used (``"model_io"`` or ``"npz"``).
    """
    params = params_from_torch(model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        from .model_io import save_float
    except ImportError:
        save_float_npz(path, model.network, params)
        return "npz"
    save_float(path, model.network, params)
    return "model_io"


def _check_export(path, model: TorchNetwork, images: np.ndarray) -> float:
    """Reload the export (no pickle) into a fresh model; return the largest logit difference to ``model``."""
    with np.load(path, allow_pickle=False) as npz:
        if str(npz["__format__"]) != FLOAT_FORMAT:
            raise RuntimeError(f"{path}: __format__ is {str(npz['__format__'])!r}, expected {FLOAT_FORMAT!r}")
        network = Network.from_json(json.loads(str(npz["__network__"])))
        params = {key: npz[key] for key in npz.files if not key.startswith("__")}
    reloaded = torch_from_params(network, params)
    return float(np.abs(predict_logits(reloaded, images) - predict_logits(model, images)).max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sw.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=8, help="passes over the training set (default 8)")
    parser.add_argument("--out", type=Path, default=Path("build/models/mnist_float.npz"),
                        help="the .npz to write (default build/models/mnist_float.npz)")
    parser.add_argument("--force", action="store_true", help="allow replacing a shipped model in models/")
    parser.add_argument("--subset", type=int, default=None, metavar="K", help="train on the first K images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--augment", type=int, default=2, metavar="PIXELS",
                        help="largest random shift of training images (default 2; 0 turns it off)")
    parser.add_argument("--dropout", type=float, default=0.25, help="dropout before Dense layers (default 0.25)")
    parser.add_argument("--mnist-dir", type=Path, default=None,
                        help="folder with the MNIST files (default: $MNIST_DIR, else the download cache)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (default: one line)")
    args = parser.parse_args(argv)
    if args.subset is not None and args.subset <= 0:
        parser.error(f"--subset must be a positive integer, not {args.subset}")
    from .apps.cli import guarded
    return guarded("python -m sw.train", lambda: _main(args), debug=args.debug)


def _main(args) -> int:
    from .apps.options import check_output
    check_output(args.out, force=args.force)
    total = time.perf_counter()
    train_images, train_labels = load_mnist("train", directory=args.mnist_dir)
    if args.subset is not None:
        train_images, train_labels = train_images[:args.subset], train_labels[:args.subset]
    test_images, test_labels = load_mnist("test")
    x_test = images_to_float(test_images)
    network = mnist_cnn()
    print(f"training {len(train_images)} images, {args.epochs:g} epochs, batch {args.batch_size}, lr {args.lr:g}, "
          f"seed {args.seed}, shift {args.augment}, dropout {args.dropout:g}, {THREADS} threads", flush=True)
    model, _ = train(network, images_to_float(train_images), train_labels, epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, seed=args.seed, augment=args.augment,
                     dropout=args.dropout, eval_data=(x_test, test_labels),
                     log=lambda line: print(line, flush=True))
    _, accuracy = evaluate(model, x_test, test_labels)
    writer = export_float(args.out, model)
    error = _check_export(args.out, model, x_test[:256])
    print(f"float test accuracy {100 * accuracy:.2f}% ({round(accuracy * len(test_labels))}/{len(test_labels)}); "
          f"wrote {args.out} with {writer}, reload max |logit diff| {error:.2e}; "
          f"{time.perf_counter() - total:.0f} s in all", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
