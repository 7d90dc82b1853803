"""sw.datasets: every IDX type code, gzip, .npy/.npz without pickle, labels, fitting inputs to a model, seeded random."""

import gzip

import numpy as np
import pytest

from sw.datasets import DataError, IDX_TYPES, fit_inputs, load_data, random_inputs, read_idx_any


def _idx(array, code):
    return bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + \
        array.astype(IDX_TYPES[code]).tobytes()


@pytest.mark.parametrize("code", sorted(IDX_TYPES))
@pytest.mark.parametrize("compress", [False, True])
def test_every_idx_type_round_trips(tmp_path, code, compress):
    rng = np.random.default_rng(code)
    dtype = IDX_TYPES[code].newbyteorder("=")
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, (3, 4, 5), endpoint=True, dtype=dtype)
    else:
        array = rng.standard_normal((3, 4, 5)).astype(dtype)
    data = _idx(array, code)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(data) if compress else data)
    got = read_idx_any(path)
    assert got.dtype == dtype and got.dtype.isnative and got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, array)


def test_idx_trailing_bytes_and_bad_type(tmp_path):
    data = _idx(np.zeros(4, np.uint8), 0x08)
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(DataError, match=r"long: 1 bytes after the 4 data bytes of shape \(4,\)"):
        read_idx_any(tmp_path / "long")
    (tmp_path / "type").write_bytes(bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 0]))
    with pytest.raises(DataError, match=r"not an IDX file \(magic 00000a01"):
        read_idx_any(tmp_path / "type")
    (tmp_path / "x.gz").write_bytes(b"plain")
    with pytest.raises(DataError, match=r"x\.gz: named \.gz but not gzip data"):
        read_idx_any(tmp_path / "x.gz")


def test_npz_keys_and_labels(tmp_path):
    x = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    np.savez(tmp_path / "a.npz", images=x, labels=np.array([1, 0]))
    data = load_data(tmp_path / "a.npz")
    np.testing.assert_array_equal(data.x, x)
    assert data.labels.tolist() == [1, 0] and data.labels.dtype == np.int64
    np.savez(tmp_path / "b.npz", p=x, q=x)
    with pytest.raises(DataError, match=r"no input array: expected one of x, inputs, images, data .* found p, q"):
        load_data(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=x, y=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match=r"labels must be a 1-D integer array, not float64"):
        load_data(tmp_path / "c.npz")


def test_fit_inputs_adds_a_channel_axis_only():
    x = np.zeros((2, 28, 28), np.uint8)
    assert fit_inputs(x, (28, 28, 1), (np.uint8,)).shape == (2, 28, 28, 1)
    with pytest.raises(DataError, match=r"shape \(28, 28\) per sample .* takes \(28, 28, 3\)"):
        fit_inputs(x, (28, 28, 3), (np.uint8,))
    with pytest.raises(DataError, match="inputs hold NaN or infinite values; clean the data"):
        fit_inputs(np.full((1, 2), np.nan, np.float32), (2,), (np.float32,))
    with pytest.raises(DataError, match=r"holds no inputs"):
        fit_inputs(np.zeros((0, 2), np.float32), (2,), (np.float32,))


def test_random_inputs_are_seeded_and_cover_the_range():
    a = random_inputs(200, (4,), np.int8, seed=3)
    assert a.dtype == np.int8 and a.shape == (200, 4)
    np.testing.assert_array_equal(a, random_inputs(200, (4,), np.int8, seed=3))
    assert not np.array_equal(a, random_inputs(200, (4,), np.int8, seed=4))
    assert a.min() == -128 and a.max() == 127  # uniform over the whole int8 range, endpoints included (this seeded draw reaches both)
