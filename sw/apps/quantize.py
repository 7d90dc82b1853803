"""``systolic8 quantize FLOAT --data DATA --out INT8``: post-training quantization into an int8 model paired with
its float model.

The int8 file records the float model's digest (:func:`sw.quantize.float_digest`), so ``systolic8 run`` and
``make mnist`` can tell that a float model and an int8 model belong together and refuse a mismatched pair.
Calibration uses the first ``--calibration`` inputs of the data (default 2,000; labels are not needed).
The shipped models in ``models/`` are never replaced without ``--force``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .options import check_count, check_output

__all__ = ["add_arguments", "run"]


def add_arguments(parser) -> None:
    parser.add_argument("float_model", type=Path, help="the float .npz (systolic8 train writes one)")
    parser.add_argument("--data", required=True, help="calibration data: IDX folder or file, .npy/.npz, 'mnist'")
    parser.add_argument("--split", choices=("train", "test"), default="train",
                        help="the split of an IDX folder to calibrate on (default train)")
    parser.add_argument("--out", type=Path, required=True, help="the int8 .npz to write")
    parser.add_argument("--force", action="store_true", help="allow replacing a shipped model in models/")
    parser.add_argument("--calibration", type=int, default=2000, help="inputs used for calibration (default 2000)")
    parser.add_argument("--method", choices=("minmax", "percentile"), default="minmax")


def run(args) -> int:
    check_output(args.out, force=args.force)
    from sw.datasets import fit_inputs, load_data
    from sw.model_io import load_float, save_quantized
    from sw.quantize import quantize
    from sw.reference import images_to_float
    network, params = load_float(args.float_model)
    dataset = load_data(args.data, split=args.split)
    count = check_count("--calibration", min(args.calibration, len(dataset)) if args.calibration > 0
                        else args.calibration, len(dataset), "inputs")
    x = fit_inputs(dataset.x[:count], network.input_shape, (np.uint8, np.float32, np.float64), dataset.source)
    qnet = quantize(network, params, images_to_float(x), method=args.method)
    save_quantized(args.out, qnet)
    print(f"wrote {args.out}: {len(qnet.layers)} layers, input scale {qnet.input_scale:.6g}, zero point "
          f"{qnet.input_zero_point}; calibrated on {count} inputs of {dataset.source}; paired with "
          f"{args.float_model} (float digest {qnet.float_digest[:12]}...)")
    return 0
