"""Data sets for any model: IDX files of any data set, ``.npy`` / ``.npz`` arrays, seeded random inputs.

:func:`read_idx_any` reads every IDX file (the format MNIST, Fashion-MNIST, KMNIST, EMNIST use): its magic (data
type and rank) and its dimensions are checked against the file's size; no checksum is asked for. The canonical
SHA-256 sums are the business of the shipped MNIST copy only (:func:`sw.mnist.load_mnist`).

:func:`load_data` takes what a user points ``--data`` at:

* an IDX file (``.gz`` or raw) or a folder holding one ``*images*`` and one ``*labels*`` IDX file of a split
  (``t10k``/``test`` preferred over ``train``, or the ``split`` asked for);
* a ``.npy`` array, or an ``.npz`` archive with the inputs under ``x`` / ``inputs`` / ``images`` (or its only
  array) and optional labels under ``y`` / ``labels``; both read with ``allow_pickle=False``;
* ``"mnist"``: MNIST through :func:`sw.mnist.load_mnist`, verified against its canonical SHA-256: the test set
  shipped inside the package, or (``split="train"``) the training set from ``$MNIST_DIR`` or the download cache.

:func:`fit_inputs` checks a batch against a model's input (shape per sample and dtype) and says what was expected
when it does not fit. :func:`random_inputs` makes seeded int8/uint8/float inputs for models whose data set is not
at hand. Every problem raises :class:`DataError` naming the file, the cause and the fix.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

__all__ = ["DataError", "IDX_TYPES", "read_idx_any", "load_data", "load_labels", "fit_inputs", "random_inputs",
           "Dataset"]

#: IDX type code -> big-endian dtype (the format's own table)
IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_INPUT_KEYS = ("x", "inputs", "images", "data")
_LABEL_KEYS = ("y", "labels", "targets")


class DataError(ValueError):
    """Data that cannot be read or does not fit the model; the message names the file, the cause and the fix."""


class Dataset:
    """Inputs ``x`` (N, ...) and optional integer ``labels`` (N,), with where they came from."""

    def __init__(self, x: np.ndarray, labels: np.ndarray | None, source: str):
        self.x, self.labels, self.source = x, labels, source

    def __len__(self):
        return len(self.x)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions") from None
    if path.name.endswith(".gz") or raw[:2] == b"\x1f\x8b":
        if raw[:2] != b"\x1f\x8b":
            raise DataError(f"{path}: named .gz but not gzip data (no 1f 8b magic); the file is corrupt or "
                            f"misnamed: fetch it again or drop the .gz suffix")
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc}); the file is damaged: fetch it again") from None
    return raw


def read_idx_any(path) -> np.ndarray:
    """Any IDX file (raw or gzip) as a native-endian array of its own type and shape.

    Raises :class:`DataError` for a bad magic (the first two bytes must be 0, then a known type code and the rank),
    a truncated header or body, or bytes after the data.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, shorter than its 4-byte magic); "
                        f"fetch it again")
    if data[0] or data[1] or data[2] not in IDX_TYPES or data[3] == 0:
        raise DataError(f"{path}: not an IDX file (magic {data[:4].hex()}; IDX files start 00 00, a type code "
                        f"08/09/0b/0c/0d/0e and the rank); pass an IDX, .npy or .npz file")
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, {header} needed for rank {ndim}); "
                        f"fetch the file again")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = len(data) - header
    if body < size:
        raise DataError(f"{path}: truncated IDX data ({body} bytes, {size} expected for shape {dims}); "
                        f"fetch the file again")
    if body > size:
        raise DataError(f"{path}: {body - size} bytes after the {size} data bytes of shape {dims}; the file is "
                        f"corrupt: fetch it again")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _load_npy_like(path: Path, what: str, keys: tuple) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{path}: holds an object array, which would need unpickling; refused: save plain "
                            f"numeric arrays (np.save / np.savez)") from None
        raise DataError(f"{path}: not a readable .npy/.npz file ({exc}); write it with np.save or np.savez") \
            from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: truncated or corrupt ({exc}); write it again with np.save or np.savez") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded as npz:
        files = list(npz.files)
        try:
            key = next((k for k in keys if k in files), files[0] if len(files) == 1 else None)
            if key is None:
                raise DataError(f"{path}: no {what} array: expected one of {', '.join(keys)} (or a single array), "
                                f"found {', '.join(files) or 'none'}; rename the array or pass a .npy file")
            x = npz[key]
            label_key = next((k for k in _LABEL_KEYS if k in files and k != key), None)
            labels = npz[label_key] if label_key else None
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise DataError(f"{path}: holds an object array, which would need unpickling; refused: save "
                                f"plain numeric arrays (np.savez)") from None
            raise DataError(f"{path}: corrupt .npz member ({exc}); write it again with np.savez") from None
        except (OSError, EOFError, KeyError) as exc:
            raise DataError(f"{path}: truncated or corrupt .npz ({type(exc).__name__}: {exc}); write it again "
                            f"with np.savez") from None
    return x, labels


def _split_files(folder: Path, split: str | None) -> tuple[Path, Path | None]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and "idx" in p.name)
    prefer = {"train": ["train"], "test": ["t10k", "test"], None: ["t10k", "test", "train"]}[split]
    for word in prefer:
        images = [p for p in files if word in p.name and "images" in p.name]
        labels = [p for p in files if word in p.name and "labels" in p.name]
        if len(images) == 1:
            return images[0], labels[0] if len(labels) == 1 else None
    raise DataError(f"{folder}: no IDX images file of the {split or 'test'} split there (looked for names with "
                    f"'{prefer[0]}', 'images' and 'idx'); point --data at the images file itself")


def load_labels(path) -> np.ndarray:
    """Integer labels from an IDX, ``.npy`` or ``.npz`` file, as int64 (N,)."""
    path = Path(path)
    labels = (_load_npy_like(path, "labels", _LABEL_KEYS)[0] if path.suffix in (".npy", ".npz")
              else read_idx_any(path))
    return _check_labels(path, labels)


def _check_labels(path, labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels must be a 1-D integer array, not {labels.dtype} of shape {labels.shape}; "
                        f"pass one class index per input")
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: label {int(labels.min())} is negative; labels are class indices from 0")
    return labels.astype(np.int64)


def load_data(data, *, labels=None, split: str | None = None) -> Dataset:
    """Inputs (and labels if the source has them, or ``labels`` names them) from what ``--data`` names."""
    if str(data) == "mnist":
        from .mnist import load_mnist
        images, mnist_labels = load_mnist(split or "test")
        result = Dataset(images, mnist_labels.astype(np.int64),
                         "the MNIST test set (shipped copy)" if (split or "test") == "test"
                         else "the MNIST training set ($MNIST_DIR or the download cache)")
    else:
        path = Path(data)
        found_labels = None
        if path.is_dir():
            path, labels_path = _split_files(path, split)
            if labels is None and labels_path is not None:
                labels = labels_path
        if path.suffix in (".npy", ".npz"):
            x, found_labels = _load_npy_like(path, "input", _INPUT_KEYS)
        elif not path.exists():
            raise DataError(f"{path}: no such file or folder; check the path (or use --random N for seeded random "
                            f"inputs)")
        else:
            x = read_idx_any(path)
        if x.ndim < 2:
            raise DataError(f"{path}: {x.ndim}-D array of shape {x.shape}; inputs need a batch axis first "
                            f"(N, ...)")
        result = Dataset(x, None if found_labels is None else _check_labels(path, found_labels), str(path))
    if labels is not None:
        result.labels = load_labels(labels)
    if result.labels is not None and len(result.labels) != len(result.x):
        raise DataError(f"{result.source}: {len(result.x)} inputs but {len(result.labels)} labels; pass the "
                        f"labels of these inputs")
    return result


def fit_inputs(x: np.ndarray, shape: tuple, dtypes: tuple, source: str = "the data") -> np.ndarray:
    """``x`` as a batch of the model's input ``shape`` (per sample), one of ``dtypes``.

    A missing trailing channel axis of 1 is added ((N, 28, 28) for a (28, 28, 1) input); anything else that
    differs is a :class:`DataError` naming both shapes.
    """
    x = np.asarray(x)
    shape = tuple(shape)
    if x.ndim == len(shape) and shape[-1] == 1 and x.shape[1:] == shape[:-1]:
        x = x[..., None]
    if x.shape[1:] != shape:
        raise DataError(f"{source}: inputs of shape {x.shape[1:]} per sample (array {x.shape}), but the model takes "
                        f"{shape}; pass data of the model's input shape (systolic8 info MODEL shows it)")
    if len(x) == 0:
        raise DataError(f"{source}: holds no inputs (array {x.shape}); pass at least one")
    names = [np.dtype(d).name for d in dtypes]
    if x.dtype.name not in names:
        raise DataError(f"{source}: inputs are {x.dtype}, the model takes {' or '.join(names)}; convert the array "
                        f"(e.g. x.astype(np.{names[0]})) or save it in one of those types")
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise DataError(f"{source}: inputs hold NaN or infinite values; clean the data")
    return x


def random_inputs(n: int, shape: tuple, dtype, seed: int) -> np.ndarray:
    """``n`` seeded random inputs of ``shape`` (per sample): uniform over the whole range of an integer dtype,
    standard normal for floats."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"--random must be a positive number of inputs, not {n!r}")
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=(n, *shape), endpoint=True, dtype=dtype)
    return rng.standard_normal((n, *shape)).astype(dtype)
