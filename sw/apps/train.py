"""``systolic8 train``: train a float network on a data set (PyTorch, CPU, seeded) and write it where told.

    systolic8 train --network mnist_cnn --data ../shared/data/mnist --out build/models/mnist_float.npz
    systolic8 train --network my_net.json --data train.npz --epochs 4 --out build/models/mine_float.npz

``--network`` is a built-in description (``mnist_cnn``) or a JSON file of :meth:`sw.network.Network.to_json`;
``--data`` any data set :func:`sw.datasets.load_data` reads (an IDX folder's train split, IDX files, ``.npz`` with
``x``/``y``), with labels. ``--eval-data`` (default: the test split of an IDX folder, else none) is scored after
every epoch. The shipped models in ``models/`` are never replaced without ``--force``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .cli import CliError
from .options import check_count, check_output

__all__ = ["add_arguments", "run", "NETWORKS", "load_network", "load_training_data"]


def _mnist_cnn():
    from sw.network import mnist_cnn
    return mnist_cnn()


#: built-in network descriptions by name
NETWORKS = {"mnist_cnn": _mnist_cnn}


def load_network(spec: str):
    """A built-in network by name, or a :class:`~sw.network.Network` from a JSON file."""
    if spec in NETWORKS:
        return NETWORKS[spec]()
    path = Path(spec)
    if not path.is_file():
        raise CliError(f"--network {spec!r} is neither a built-in network ({', '.join(NETWORKS)}) nor a JSON file")
    from sw.network import Network, NetworkError
    try:
        return Network.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON ({exc}); write the description with Network.dumps()") from None
    except (NetworkError, KeyError, TypeError) as exc:
        raise CliError(f"{path}: not a network description ({exc}); write it with Network.dumps()") from None


def load_training_data(data, labels, split, network, n=None, what="training"):
    """(float NHWC inputs, labels) of a data set for ``network``; uint8 pixels map to [0, 1]."""
    from sw.datasets import fit_inputs, load_data
    from sw.reference import images_to_float
    dataset = load_data(data, labels=labels, split=split)
    if dataset.labels is None:
        raise CliError(f"{dataset.source}: {what} needs labels; pass --labels (IDX, .npy or an .npz with 'y')")
    count = check_count("--subset" if what == "training" else "--calibration", n, len(dataset), "inputs")
    x = fit_inputs(dataset.x[:count], network.input_shape, (np.uint8, np.float32, np.float64), dataset.source)
    y = dataset.labels[:count]
    classes = network.output_shape[0]
    if y.max() >= classes:
        raise CliError(f"{dataset.source}: label {int(y.max())} but the network has {classes} outputs; pass labels "
                       f"0..{classes - 1} or a network with more outputs")
    return images_to_float(x), y


def add_arguments(parser) -> None:
    parser.add_argument("--network", default="mnist_cnn",
                        help=f"built-in network ({', '.join(NETWORKS)}) or a Network JSON file (default mnist_cnn)")
    parser.add_argument("--data", required=True, help="training data: IDX folder or file, .npz with x and y")
    parser.add_argument("--labels", type=Path, default=None, help="labels, when --data holds inputs only")
    parser.add_argument("--eval-data", default=None, help="data scored after every epoch (default: an IDX "
                        "folder's test split)")
    parser.add_argument("--out", type=Path, required=True, help="the float .npz to write")
    parser.add_argument("--force", action="store_true", help="allow replacing a shipped model in models/")
    parser.add_argument("--epochs", type=float, default=8, help="passes over the data (default 8)")
    parser.add_argument("--subset", type=int, default=None, metavar="K", help="train on the first K inputs only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--augment", type=int, default=2, metavar="PIXELS",
                        help="largest random shift of training images (default 2; 0 turns it off)")
    parser.add_argument("--dropout", type=float, default=0.25, help="dropout before Dense layers (default 0.25)")


def run(args) -> int:
    check_output(args.out, force=args.force)
    if not args.epochs > 0:
        raise CliError(f"--epochs must be positive, not {args.epochs}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be a positive integer, not {args.batch_size}")
    if not 0 <= args.dropout < 1:
        raise CliError(f"--dropout must lie in [0, 1), not {args.dropout}")
    if args.augment < 0:
        raise CliError(f"--augment must be 0 or a positive number of pixels, not {args.augment}")
    network = load_network(args.network)
    x, y = load_training_data(args.data, args.labels, "train", network, args.subset)
    eval_data = None
    if args.eval_data is not None:
        eval_data = load_training_data(args.eval_data, None, "test", network, None, "evaluation")
    elif args.data == "mnist" or Path(args.data).is_dir():
        try:
            eval_data = load_training_data(args.data, None, "test", network, None, "evaluation")
        except (CliError, ValueError):
            eval_data = None
    from sw import train as trainer  # needs torch: the extra 'torch'
    total = time.perf_counter()
    print(f"training {args.network} on {len(x)} inputs, {args.epochs:g} epochs, batch {args.batch_size}, "
          f"lr {args.lr:g}, seed {args.seed}, shift {args.augment}, dropout {args.dropout:g}", flush=True)
    model, _ = trainer.train(network, x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, augment=args.augment, dropout=args.dropout, eval_data=eval_data,
                             log=lambda line: print(line, flush=True))
    trainer.export_float(args.out, model)
    line = f"wrote {args.out}"
    if eval_data is not None:
        _, accuracy = trainer.evaluate(model, *eval_data)
        line += f"; float accuracy {100 * accuracy:.2f}% on {len(eval_data[1])} evaluation inputs"
    print(f"{line}; {time.perf_counter() - total:.0f} s", flush=True)
    return 0
