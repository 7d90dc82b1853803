"""MNIST in its original IDX form: a strict reader, SHA-256 verification and the places the files come from.

The four canonical files are ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, usually gzip-compressed (``.gz``).
Their SHA-256 sums are taken over the *uncompressed* bytes (gzip wrappings differ between mirrors), and every file
whose name is one of the four is checked against them when read.

Where :func:`load_mnist` finds the files:

* ``"test"``: the copy embedded in this package (``sw/data/mnist/``), unless ``directory`` is given;
* ``"train"``: ``directory``, else the folder named by the environment variable ``MNIST_DIR`` (developers and CI use
  ``../shared/data/mnist`` relative to the repository), else a user cache
  (``$XDG_CACHE_HOME/systolic8/mnist`` or ``~/.cache/systolic8/mnist``), downloaded there on first use from the
  mirror ``MNIST_MIRROR`` (default :data:`DEFAULT_MIRROR`) and verified before it is kept.

The float networks take images as :func:`images_to_float` makes them: NHWC float32 in [0, 1] (grey level / 255).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "MnistError", "SHA256", "DEFAULT_MIRROR", "FILES",
    "read_idx", "load_mnist", "download_mnist", "cache_dir", "images_to_float",
]

#: SHA-256 of the uncompressed canonical files (shared/data/mnist/README.md).
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: (images file, labels file) of each split, without the ``.gz`` suffix.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Where the ``.gz`` files are fetched from when neither ``directory`` nor ``MNIST_DIR`` is given; override with the
#: environment variable ``MNIST_MIRROR`` or the ``mirror`` argument (any URL urllib opens, ``file://`` included).
DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

_MAGIC_IMAGES = 0x00000803  # uint8 data, 3 dimensions
_MAGIC_LABELS = 0x00000801  # uint8 data, 1 dimension
_GZIP_MAGIC = b"\x1f\x8b"
_FETCH_HINT = ("set MNIST_DIR to a folder holding the four MNIST files (developers and CI: ../shared/data/mnist "
               "relative to the repository), or re-fetch them")
#: The fix for the test split embedded in the package, which MNIST_DIR does not replace.
_EMBEDDED_HINT = ("this is the MNIST test set shipped inside the package (sw/data/mnist/), which MNIST_DIR does not "
                  "replace: restore it with `git checkout sw/data/mnist` or reinstall the package")


class MnistError(ValueError):
    """An MNIST file that is missing, malformed or not the canonical one; the message names the file and the fix."""


def _canonical_name(path: Path) -> str:
    name = path.name
    return name[:-3] if name.endswith(".gz") else name


def _decompress(path: Path, raw: bytes, hint: str = _FETCH_HINT) -> bytes:
    if not (path.name.endswith(".gz") or raw[:2] == _GZIP_MAGIC):
        return raw
    if raw[:2] != _GZIP_MAGIC:
        raise MnistError(f"{path}: not a gzip file (it is named .gz but does not start with the gzip magic 1f 8b); "
                         f"the file is corrupt: {hint}")
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut-off stream is an EOFError
        raise MnistError(f"{path}: corrupt gzip data ({exc}); {hint}") from None


def _parse_idx(path: Path, data: bytes, hint: str = _FETCH_HINT) -> np.ndarray:
    if len(data) < 4:
        raise MnistError(f"{path}: truncated IDX file ({len(data)} bytes, shorter than its 4-byte magic); {hint}")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (_MAGIC_IMAGES, _MAGIC_LABELS):
        raise MnistError(f"{path}: bad IDX magic 0x{magic:08x}; expected 0x{_MAGIC_IMAGES:08x} (uint8 images) or "
                         f"0x{_MAGIC_LABELS:08x} (uint8 labels). Not an MNIST file: {hint}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistError(f"{path}: truncated IDX header ({len(data)} bytes, {header} needed for {ndim} dimensions); "
                         f"{hint}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if magic == _MAGIC_IMAGES and dims[1:] != (28, 28):
        raise MnistError(f"{path}: images must be N x 28 x 28, the file says {' x '.join(map(str, dims))}; "
                         f"{hint}")
    size = 1
    for d in dims:
        size *= d
    body = len(data) - header
    if body < size:
        raise MnistError(f"{path}: truncated IDX data ({body} bytes, {size} expected for shape {dims}); {hint}")
    if body > size:
        raise MnistError(f"{path}: {body - size} trailing bytes after the {size} data bytes of shape {dims}; "
                         f"the file is corrupt: {hint}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx(path, *, verify: bool = True, hint: str | None = None) -> np.ndarray:
    """Read a uint8 IDX file (raw or gzip-compressed) into an array.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip is detected by the ``.gz`` suffix or the gzip magic bytes.
    verify : bool
        Check the SHA-256 of the uncompressed bytes when the file carries one of the four canonical names
        (:data:`SHA256`); files with other names are only checked for structure.
    hint : str, optional
        The fix the error messages give (default: set ``MNIST_DIR`` or re-fetch the files); the package's embedded
        test set says how to restore it instead, since ``MNIST_DIR`` does not apply to it.

    Returns
    -------
    numpy.ndarray
        uint8 ``(N, 28, 28)`` for images (magic 0x00000803) or ``(N,)`` for labels (magic 0x00000801).

    Raises
    ------
    MnistError
        The file is missing, unreadable, not gzip though named so, truncated, has a bad magic, wrong image size,
        trailing bytes, or a hash that is not the canonical one. The message names the file and how to fix it.
    """
    path = Path(path)
    hint = _FETCH_HINT if hint is None else hint
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MnistError(f"{path}: no such file; {hint}") from None
    except OSError as exc:
        raise MnistError(f"{path}: cannot be read ({exc.strerror or exc}); {hint}") from None
    data = _decompress(path, raw, hint)
    array = _parse_idx(path, data, hint)
    name = _canonical_name(path)
    if verify and name in SHA256:
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[name]:
            raise MnistError(f"{path}: SHA-256 of the uncompressed data is {digest}, not the canonical {SHA256[name]} "
                             f"of {name}; the file is altered or from another data set: "
                             + (f"delete it and {hint}" if hint is _FETCH_HINT else hint))
    return array


def _check_download(url: str, name: str, path: Path) -> None:
    raw = path.read_bytes()
    try:
        data = _decompress(path, raw)
        _parse_idx(path, data)
    except MnistError as exc:
        raise MnistError(f"{url}: the download is not a valid MNIST file ({exc}); the mirror is broken: set "
                         f"MNIST_MIRROR to another one or MNIST_DIR to a local copy") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        raise MnistError(f"{url}: SHA-256 of the uncompressed download is {digest}, not the canonical "
                         f"{SHA256[name]} of {name}; the mirror serves other data: set MNIST_MIRROR to "
                         f"another one or MNIST_DIR to a local copy")


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    raise MnistError(f"{directory}: neither {name}.gz nor {name} is there; {_FETCH_HINT}")


def _read_split(split: str, images_path: Path, labels_path: Path,
                hint: str = _FETCH_HINT) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, hint=hint)
    labels = read_idx(labels_path, hint=hint)
    if images.ndim != 3 or labels.ndim != 1:
        raise MnistError(f"{images_path} / {labels_path}: expected an images file and a labels file for the "
                         f"{split!r} split, got shapes {images.shape} and {labels.shape}; {hint}")
    if len(images) != len(labels):
        raise MnistError(f"{images_path} / {labels_path}: {len(images)} images but {len(labels)} labels; "
                         f"{hint}")
    if labels.size and labels.max() > 9:
        raise MnistError(f"{labels_path}: label {int(labels.max())} is not a digit 0-9; {hint}")
    return images, labels


def cache_dir() -> Path:
    """The download cache: ``$XDG_CACHE_HOME/systolic8/mnist``, or ``~/.cache/systolic8/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "systolic8" / "mnist"


def download_mnist(split: str, *, directory=None, mirror: str | None = None) -> Path:
    """Make sure ``directory`` (default :func:`cache_dir`) holds the verified ``.gz`` files of ``split``.

    Files already there are verified and kept; missing or bad ones are fetched from ``mirror`` (default the
    environment variable ``MNIST_MIRROR``, else :data:`DEFAULT_MIRROR`) with urllib, verified, and moved into place
    atomically, so an interrupted download never leaves a file that looks complete. Returns the folder.
    """
    if split not in FILES:
        raise MnistError(f"MNIST split must be 'train' or 'test', not {split!r}")
    directory = Path(directory) if directory is not None else cache_dir()
    mirror = mirror or os.environ.get("MNIST_MIRROR") or DEFAULT_MIRROR
    if not mirror.endswith("/"):
        mirror += "/"
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES[split]:
        target = directory / f"{name}.gz"
        if target.is_file():
            try:
                read_idx(target)
                continue
            except MnistError:
                pass  # a bad cached copy is replaced below
        url = mirror + f"{name}.gz"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part.gz", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    with urllib.request.urlopen(url, timeout=60) as response:
                        while chunk := response.read(1 << 20):
                            out.write(chunk)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    reason = getattr(exc, "reason", None) or exc
                    raise MnistError(f"Cannot download {url} ({reason}). Without network access set MNIST_DIR to a "
                                     f"folder holding the MNIST .gz files (developers and CI: ../shared/data/mnist "
                                     f"relative to the repository), or point MNIST_MIRROR at a reachable mirror") \
                        from None
            _check_download(url, name, Path(tmp))
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return directory


def _embedded(name: str) -> Path:
    resource = resources.files("sw").joinpath("data", "mnist", f"{name}.gz")
    # The package is installed from a folder (regular or editable install), so the resource is a real file.
    return Path(str(resource))


def load_mnist(split: str, *, directory=None, mirror: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split as ``(images uint8 (N, 28, 28), labels uint8 (N,))``, verified against :data:`SHA256`.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    directory : str or os.PathLike, optional
        A folder holding the split's files (``.gz`` or uncompressed). Without it, ``"test"`` reads the copy embedded
        in the package and ``"train"`` reads ``$MNIST_DIR``, else the user cache, downloading into it if needed.
    mirror : str, optional
        Base URL for the download (overrides ``MNIST_MIRROR``); only used when the train split is fetched.
    """
    if split not in FILES:
        raise MnistError(f"MNIST split must be 'train' or 'test', not {split!r}")
    images_name, labels_name = FILES[split]
    if directory is None:
        if split == "test":
            return _read_split(split, _embedded(images_name), _embedded(labels_name), _EMBEDDED_HINT)
        env = os.environ.get("MNIST_DIR")
        if env:
            directory = Path(env)
            if not directory.is_dir():
                raise MnistError(f"MNIST_DIR={env!r} is not a folder; point it at the folder holding the MNIST files "
                                 f"(developers and CI: ../shared/data/mnist relative to the repository) or unset it")
        else:
            directory = download_mnist(split, mirror=mirror)
    directory = Path(directory)
    return _read_split(split, _find(directory, images_name), _find(directory, labels_name))


def images_to_float(images) -> np.ndarray:
    """uint8 images ``(N, 28, 28)`` -> the float networks' input: NHWC float32 ``(N, 28, 28, 1)`` in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise MnistError(f"images must be a uint8 (N, H, W) array, not {images.dtype} {images.shape}")
    from .reference import images_to_float as pixels_to_float  # the one pixel -> float rule
    return pixels_to_float(images)[..., None]
