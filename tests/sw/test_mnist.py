"""sw.mnist: the embedded test split, the strict IDX reader's errors, MNIST_DIR and the (offline) download path."""

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from sw import mnist
from sw.mnist import FILES, SHA256, MnistError, images_to_float, load_mnist, read_idx

EMBEDDED = Path(mnist.__file__).parent / "data" / "mnist"


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write(path: Path, data: bytes, *, compress: bool) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """Any download attempt fails fast and offline: the mirror is an empty local folder."""
    monkeypatch.setenv("MNIST_MIRROR", (tmp_path / "no-mirror").as_uri() + "/")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_DIR", raising=False)


# --- the real data ---------------------------------------------------------------------------------------------------

def test_embedded_test_split_is_the_canonical_one(no_download):
    images, labels = load_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # Independent of read_idx: rebuild the uncompressed bytes from the arrays and hash them.
    assert hashlib.sha256(idx_bytes(images)).hexdigest() == SHA256["t10k-images-idx3-ubyte"]
    assert hashlib.sha256(idx_bytes(labels)).hexdigest() == SHA256["t10k-labels-idx1-ubyte"]


def test_embedded_copy_matches_shared_files(shared_mnist):
    for name in FILES["test"]:
        embedded = gzip.decompress((EMBEDDED / f"{name}.gz").read_bytes())
        assert hashlib.sha256(embedded).hexdigest() == SHA256[name], name
        shared = gzip.decompress((shared_mnist / f"{name}.gz").read_bytes())
        assert embedded == shared, name


def test_hash_table_matches_shared_readme(shared_mnist):
    readme = (shared_mnist / "README.md").read_text()
    for name, digest in SHA256.items():
        assert f"{digest}  {name}" in readme, name


def test_mnist_dir_train_split(monkeypatch, shared_mnist, no_download):
    monkeypatch.setenv("MNIST_DIR", str(shared_mnist))
    images, labels = load_mnist("train")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]


def test_mnist_dir_not_a_folder(monkeypatch, tmp_path, no_download):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(MnistError, match=r"MNIST_DIR='.*nowhere' is not a folder.*shared/data/mnist"):
        load_mnist("train")


def test_directory_accepts_uncompressed_files(tmp_path):
    for name in FILES["test"]:
        (tmp_path / name).write_bytes(gzip.decompress((EMBEDDED / f"{name}.gz").read_bytes()))
    images, labels = load_mnist("test", directory=tmp_path)
    expected_images, expected_labels = load_mnist("test")
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def test_bad_split():
    with pytest.raises(MnistError, match=r"split must be 'train' or 'test', not 'validation'"):
        load_mnist("validation")


def test_images_to_float():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = images_to_float(images)
    assert x.dtype == np.float32 and x.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(x[0, :, :, 0], np.array([[0, 1], [0.2, 0.4]], dtype=np.float32))
    with pytest.raises(MnistError, match=r"uint8 \(N, H, W\) array, not float64"):
        images_to_float(images.astype(np.float64))


# --- the strict reader -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path, compress):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    np.testing.assert_array_equal(read_idx(write(tmp_path / f"i{suffix}", idx_bytes(images), compress=compress)),
                                  images)
    np.testing.assert_array_equal(read_idx(write(tmp_path / f"l{suffix}", idx_bytes(labels), compress=compress)),
                                  labels)


def test_missing_file(tmp_path):
    with pytest.raises(MnistError, match=r"missing\.gz: no such file; set MNIST_DIR"):
        read_idx(tmp_path / "missing.gz")


def test_missing_file_in_directory(tmp_path):
    with pytest.raises(MnistError, match=r"neither t10k-images-idx3-ubyte\.gz nor t10k-images-idx3-ubyte .*MNIST_DIR"):
        load_mnist("test", directory=tmp_path)


@pytest.mark.parametrize("cut, message", [
    (2, r"truncated IDX file \(2 bytes"),
    (10, r"truncated IDX header \(10 bytes, 16 needed for 3 dimensions\)"),
    (16 + 28 * 28 * 2 - 1, r"truncated IDX data \(1567 bytes, 2352 expected for shape \(3, 28, 28\)\)"),
])
def test_truncated(tmp_path, cut, message):
    data = idx_bytes(np.zeros((3, 28, 28), np.uint8))[:cut]
    path = write(tmp_path / "cut.gz", data, compress=True)
    with pytest.raises(MnistError, match=rf"cut\.gz: {message}.*MNIST_DIR"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = write(tmp_path / "long", idx_bytes(np.zeros(4, np.uint8)) + b"\0\0\0", compress=False)
    with pytest.raises(MnistError, match=r"long: 3 trailing bytes after the 4 data bytes of shape \(4,\)"):
        read_idx(path)


def test_wrong_magic(tmp_path):
    data = bytearray(idx_bytes(np.zeros((1, 28, 28), np.uint8)))
    data[2] = 0x0D  # float32 data type
    path = write(tmp_path / "float.gz", bytes(data), compress=True)
    with pytest.raises(MnistError, match=r"float\.gz: bad IDX magic 0x00000d03; expected 0x00000803 .* 0x00000801"):
        read_idx(path)


def test_wrong_image_dims(tmp_path):
    path = write(tmp_path / "small.gz", idx_bytes(np.zeros((2, 8, 8), np.uint8)), compress=True)
    with pytest.raises(MnistError, match=r"small\.gz: images must be N x 28 x 28, the file says 2 x 8 x 8"):
        read_idx(path)


def test_not_gzip(tmp_path):
    path = write(tmp_path / "plain.gz", idx_bytes(np.zeros(4, np.uint8)), compress=False)
    with pytest.raises(MnistError, match=r"plain\.gz: not a gzip file .*1f 8b"):
        read_idx(path)


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_corrupt_gzip(tmp_path, damage):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8) % 10), mtime=0))
    if damage == "cut":
        packed = packed[:len(packed) // 2]
    else:
        packed[-6] ^= 0xFF  # inside the CRC-32 trailer
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(MnistError, match=r"bad\.gz: corrupt gzip data .*MNIST_DIR"):
        read_idx(path)


def test_hash_mismatch(tmp_path):
    images, _ = load_mnist("test")
    altered = images.copy()
    altered[1234, 14, 14] ^= 1
    path = write(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(altered), compress=True)
    with pytest.raises(MnistError, match=r"t10k-images-idx3-ubyte\.gz: SHA-256 of the uncompressed data is [0-9a-f]{64}, "
                                         r"not the canonical 0fa7898d.* delete it and set MNIST_DIR"):
        read_idx(path)
    np.testing.assert_array_equal(read_idx(path, verify=False), altered)  # structure alone is fine
    shutil.copy(EMBEDDED / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(MnistError, match=r"SHA-256"):
        load_mnist("test", directory=tmp_path)


def test_label_count_mismatch(tmp_path):
    write(tmp_path / "i", idx_bytes(np.zeros((2, 28, 28), np.uint8)), compress=False)
    write(tmp_path / "l", idx_bytes(np.zeros(3, np.uint8)), compress=False)
    with pytest.raises(MnistError, match=r"2 images but 3 labels"):
        mnist._read_split("test", tmp_path / "i", tmp_path / "l")


# --- download (offline: file:// mirrors) -----------------------------------------------------------------------------

def make_mirror(tmp_path, split, train_source=None) -> str:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    source = train_source if split == "train" else EMBEDDED
    for name in FILES[split]:
        shutil.copy(source / f"{name}.gz", mirror)
    return mirror.as_uri() + "/"


def test_download_into_cache(monkeypatch, tmp_path, shared_mnist, no_download):
    monkeypatch.setenv("MNIST_MIRROR", make_mirror(tmp_path, "train", shared_mnist))
    images, labels = load_mnist("train")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    cache = tmp_path / "cache" / "systolic8" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    # A second load reads the verified cache: it works with the mirror gone.
    shutil.rmtree(tmp_path / "mirror")
    _, labels2 = load_mnist("train")
    np.testing.assert_array_equal(labels2, labels)


def test_download_mirror_argument_and_bad_cache_replaced(tmp_path):
    mirror = make_mirror(tmp_path, "test")
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    assert mnist.download_mnist("test", directory=cache, mirror=mirror.rstrip("/")) == cache
    images, labels = load_mnist("test", directory=cache)
    assert labels.shape == (10000,) and labels[:3].tolist() == [7, 2, 1]
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "a partial download was left behind"


def test_download_no_network_says_set_mnist_dir(no_download):
    with pytest.raises(MnistError, match=r"Cannot download file://.*train-images-idx3-ubyte\.gz .*set MNIST_DIR"):
        load_mnist("train")


def test_download_wrong_data_is_rejected(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in FILES["test"]:  # valid IDX files under the canonical names, but not MNIST's bytes
        shape = (1, 28, 28) if "images" in name else (1,)
        (mirror / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(shape, np.uint8))))
    cache = tmp_path / "c"
    with pytest.raises(MnistError, match=r"t10k-images-idx3-ubyte\.gz: SHA-256 of the uncompressed download .*"
                                         r"set MNIST_MIRROR to another one or MNIST_DIR"):
        mnist.download_mnist("test", directory=cache, mirror=mirror.as_uri())
    assert list(cache.iterdir()) == [], "a rejected download was kept"


def test_download_not_gzip_is_rejected(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in FILES["test"]:
        (mirror / f"{name}.gz").write_text("<html>not found</html>")
    with pytest.raises(MnistError, match=r"not a valid MNIST file .*not a gzip file.*set MNIST_MIRROR"):
        mnist.download_mnist("test", directory=tmp_path / "c", mirror=mirror.as_uri())
