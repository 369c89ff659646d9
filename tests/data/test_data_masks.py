"""gmai.data.masks: boxes, areas, centroids, location words, components."""

from __future__ import annotations

import numpy as np
import pytest

from gmai.data.masks import (MaskError, check_mask_shape, check_normalised_box, facts_for_label, location_phrase,
                             mask_facts, normalise_box)
from gmai.data.records import Box


def test_location_phrases_cover_the_grid():
    assert location_phrase(0.1, 0.1) == "left upper"
    assert location_phrase(0.9, 0.9) == "right lower"
    assert location_phrase(0.5, 0.5) == "central"
    assert location_phrase(0.1, 0.5) == "left"
    assert location_phrase(0.5, 0.95) == "lower"
    assert location_phrase(1.0, 1.0) == "right lower"  # the far edge stays inside the grid


def test_mask_facts_box_area_centroid_components():
    mask = np.zeros((100, 200), dtype=np.int64)
    mask[10:20, 20:40] = 1  # left upper blob
    mask[12:18, 50:56] = 1  # a second component of the same label
    mask[80:90, 180:190] = 2
    facts = {f.label: f for f in mask_facts(mask, {1: "lesion", 2: "cyst"})}
    lesion, cyst = facts["lesion"], facts["cyst"]
    assert lesion.box.rounded() == [0.1, 0.1, 0.28, 0.2]
    assert lesion.components == 2 and cyst.components == 1
    assert lesion.area_fraction == pytest.approx((200 + 36) / 20000)
    assert lesion.location == "left upper" and cyst.location == "right lower"
    assert cyst.centroid == pytest.approx((185 / 200, 85 / 100))


def test_diagonal_pixels_are_one_component():
    mask = np.zeros((5, 5), dtype=np.int64)
    mask[1, 1] = mask[2, 2] = 1
    assert mask_facts(mask, {1: "x"})[0].components == 1


def test_unknown_label_and_shape_mismatch_raise():
    mask = np.zeros((8, 8), dtype=np.int64)
    mask[2, 2] = 7
    with pytest.raises(MaskError, match="7"):
        mask_facts(mask, {1: "lesion"})
    assert mask_facts(np.zeros((8, 8), dtype=np.int64), {1: "lesion"}) == []
    with pytest.raises(MaskError, match="shape"):
        check_mask_shape(np.zeros((8, 9)), mask)


def test_normalise_box_checks_bounds():
    box = normalise_box("nodule", 10, 20, 30, 60, width=100, height=80)
    assert box.rounded() == [0.1, 0.25, 0.3, 0.75]
    with pytest.raises(MaskError, match="outside"):
        normalise_box("nodule", 90, 10, 120, 20, width=100, height=80)
    with pytest.raises(MaskError, match="empty"):
        normalise_box("nodule", 10, 10, 10, 20, width=100, height=80)
    assert normalise_box("n", -0.3, 0, 100.2, 80, width=100, height=80).x2 == 1.0  # rounding forgiven
    with pytest.raises(MaskError, match="outside"):
        check_normalised_box(Box("n", 0.5, 0.5, 1.2, 0.9))


def test_facts_match_pixel_coordinate_statistics():
    """Area, centroid and box equal the plain statistics of the foreground pixels' coordinates."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(5, 120, 2))
        binary = np.zeros((height, width), bool)
        for _ in range(int(rng.integers(1, 4))):
            y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
            binary[y:y + int(rng.integers(1, 40)), x:x + int(rng.integers(1, 40))] = True
        binary &= rng.random((height, width)) > 0.2
        ys, xs = np.nonzero(binary)
        facts = facts_for_label(binary, "x")
        if ys.size == 0:
            assert facts is None
            continue
        assert facts.area_fraction == ys.size / (height * width)
        assert facts.centroid == ((float(xs.mean()) + 0.5) / width, (float(ys.mean()) + 0.5) / height)
        assert (facts.box.x1, facts.box.y1, facts.box.x2, facts.box.y2) == (
            xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height)
