"""The data engine's faster code paths give exactly what the plain expressions they replace give.

Each test compares a fast path with the straightforward computation it stands in for (kept here as the
reference), on inputs that reach the fast path and on ones that fall back, so a change that alters one
output byte fails here before it shows in a built corpus.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from gmai.data import imaging
from gmai.data import write as W
from gmai.data.build import _remove_unreferenced_images
from gmai.data.sources.nifti import _label_areas


def _window_reference(values: np.ndarray, low: float, width: float) -> np.ndarray:
    scaled = (values.astype(np.float64) - low) / width
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_blockwise_window_equals_whole_array_expression(dtype, order):
    rng = np.random.default_rng(0)
    shape = (70, 64, 9)  # 40320 voxels: more than one block, and not a multiple of the block size
    assert np.prod(shape) > imaging._BLOCK and np.prod(shape) % imaging._BLOCK
    values = np.asarray(rng.normal(0, 600, shape), order=order).astype(dtype, order=order)
    if np.issubdtype(dtype, np.floating):  # non-finite values must map the same way too
        values.flat[::97], values.flat[::101], values.flat[::103] = np.nan, np.inf, -np.inf
    for low, width in ((-160.0, 400.0), (-1350.0, 1500.0), (0.25, 3.5)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN -> uint8 warns in both
            expected, got = _window_reference(values, low, width), imaging._linear_to_uint8(values, low, width)
        assert got.dtype == np.uint8 and got.strides == expected.strides
        assert np.array_equal(got, expected)


def test_window_fallbacks_for_small_and_strided_inputs():
    rng = np.random.default_rng(1)
    volume = rng.normal(0, 600, (80, 90, 8)).astype(np.float32)
    for values in (volume[:5, :5, 0], volume[::2, ::-1, :], np.moveaxis(volume, 0, 1)):
        assert np.array_equal(imaging._linear_to_uint8(values, -160.0, 400.0), _window_reference(values, -160.0, 400.0))
    assert np.array_equal(imaging.apply_window(volume, 40, 400), _window_reference(volume, -160.0, 400.0))
    assert np.array_equal(imaging.rescale_to_uint8(volume, -50.0, 70.0), _window_reference(volume, -50.0, 120.0))


def _areas_reference(labels: np.ndarray, axis: int, highest: int) -> np.ndarray:
    others = tuple(i for i in range(3) if i != axis)
    counts = np.zeros((labels.shape[axis], highest + 1), np.int64)
    for k in range(1, highest + 1):
        counts[:, k] = np.add.reduce((labels == k).view(np.uint8), axis=others, dtype=np.int64)
    counts[:, 0] = np.prod([labels.shape[i] for i in others]) - counts[:, 1:].sum(axis=1)
    return counts


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_label_areas_equal_per_plane_counts(order, axis):
    labels = np.asarray(np.random.default_rng(2).integers(0, 4, (11, 13, 7)), order=order).astype(np.uint8, order=order)
    areas = _label_areas(labels, axis)
    assert areas.ids == [0, 1, 2, 3]
    assert np.array_equal(areas.counts, _areas_reference(labels, axis, 3))


def test_binary_column_equals_pa_array():
    rng = np.random.default_rng(3)
    values = [rng.bytes(int(n)) for n in rng.integers(0, 5000, 40)] + [b""]
    built = W._binary_array(values, pa.binary())
    assert built.equals(pa.array(values, pa.binary()))
    built.validate(full=True)
    assert W._binary_array([], pa.binary()).equals(pa.array([], pa.binary()))


def test_remove_unreferenced_images(tmp_path: Path):
    kept = "images/src-a/" + "a" * 32 + ".png"
    files = {
        kept: True,
        "images/src-a/" + "b" * 32 + ".png": False,  # not referenced: removed
        "images/src-b/" + "c" * 32 + ".png": False,  # its folder becomes empty: removed as well
        "images/src-a/.x.png.123.tmp": False,  # debris of a killed write_atomic
        "images/src-a/notes.txt": True,  # not named like ours: left alone
    }
    for relpath in files:
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(b"x")
    (tmp_path / "images" / "empty" / "deeper").mkdir(parents=True)
    _remove_unreferenced_images(tmp_path, {kept})
    for relpath, stays in files.items():
        assert (tmp_path / relpath).exists() == stays, relpath
    assert not (tmp_path / "images" / "src-b").exists() and not (tmp_path / "images" / "empty").exists()
    assert (tmp_path / "images").is_dir()  # the folder itself stays
