"""Segmentation masks -> facts a caption can state (boxes, areas, centroids, locations, counts).

Coordinates are normalised to [0, 1] with x to the right and y downwards, as the image is seen.

Location words describe the image *as seen*: "left" is the left of the picture. In radiological
display convention (which :func:`gmai.data.imaging.volume_slice` follows for axial and coronal
slices) the patient's right is shown on the image's left, so "left" here is usually the patient's
right. Captions should therefore say "on the left of the image", not "in the left lung".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gmai.data.records import Box, MaskFacts

# The 3x3 grid of the image: thirds along each axis.
_HORIZONTAL = ("left", "center", "right")
_VERTICAL = ("upper", "middle", "lower")


class MaskError(ValueError):
    """A mask that cannot be turned into facts (shape mismatch, unknown label id, ...)."""


def location_phrase(x: float, y: float) -> str:
    """A coarse location for a normalised point: "left upper", "right", "lower", "central", ...

    The image is split in thirds along each axis; the middle third of an axis is left unsaid
    ("left" rather than "left middle"), and the centre cell is "central".
    """
    h = _HORIZONTAL[min(int(x * 3), 2)]
    v = _VERTICAL[min(int(y * 3), 2)]
    if h == "center" and v == "middle":
        return "central"
    if h == "center":
        return v
    if v == "middle":
        return h
    return f"{h} {v}"


def box_from_pixels(label: str, ys: np.ndarray, xs: np.ndarray, height: int, width: int) -> Box:
    """The tight box around pixel coordinates, normalised so that it covers whole pixels."""
    return Box(
        label,
        float(xs.min()) / width,
        float(ys.min()) / height,
        float(xs.max() + 1) / width,
        float(ys.max() + 1) / height,
    )


def count_components(binary: np.ndarray) -> int:
    """Connected components with 8-connectivity (diagonal neighbours touch)."""
    from scipy import ndimage

    _, count = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    return int(count)


def facts_for_label(binary: np.ndarray, label: str) -> MaskFacts | None:
    """Facts for one label's binary mask, or None if it has no foreground."""
    rows = np.flatnonzero(binary.any(axis=1))
    if rows.size == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1])
    cols = np.flatnonzero(binary[top:bottom + 1].any(axis=0))  # every pixel lies in these rows: scan only them
    # Work inside the bounding box (the same pixels, a fraction of the array for a small organ).
    left, right = int(cols[0]), int(cols[-1])
    crop = binary[top:bottom + 1, left:right + 1]
    # Area and centroid from per-row/per-column pixel counts: exact integer sums, so the same numbers
    # as the mean of every pixel's coordinates, without listing the pixels (~3x cheaper on an organ).
    per_row, per_col = np.count_nonzero(crop, axis=1), np.count_nonzero(crop, axis=0)
    area = int(per_row.sum())
    height, width = binary.shape
    cx = (int(per_col @ np.arange(left, right + 1)) / area + 0.5) / width
    cy = (int(per_row @ np.arange(top, bottom + 1)) / area + 0.5) / height
    return MaskFacts(
        label=label,
        box=Box(label, left / width, top / height, (right + 1) / width, (bottom + 1) / height),
        area_fraction=float(area) / float(height * width),
        centroid=(cx, cy),
        location=location_phrase(cx, cy),
        components=count_components(crop),
    )


def mask_facts(mask: np.ndarray, labels: Mapping[int, str], *, strict: bool = True) -> list[MaskFacts]:
    """One MaskFacts per label id present in an integer label mask (0 is background).

    ``labels`` maps label id -> name. With ``strict`` an id in the mask that the map does not name
    raises :class:`MaskError` (an unknown label is a data error, not something to guess).
    """
    if mask.ndim != 2:
        raise MaskError(f"mask must be 2-D, got shape {tuple(mask.shape)}")
    present = [int(v) for v in np.unique(mask) if v != 0]
    unknown = [v for v in present if v not in labels]
    if unknown and strict:
        raise MaskError(f"mask has label id(s) {unknown} not in the label map {dict(labels)}")
    facts = []
    for value in present:
        if value in labels:
            fact = facts_for_label(mask == value, labels[value])
            if fact is not None:
                facts.append(fact)
    return facts


def check_mask_shape(image: np.ndarray, mask: np.ndarray) -> None:
    if tuple(image.shape[:2]) != tuple(mask.shape[:2]):
        raise MaskError(f"mask shape {tuple(mask.shape[:2])} != image shape {tuple(image.shape[:2])}")


def normalise_box(
    label: str, x1: float, y1: float, x2: float, y2: float, width: int, height: int, *, tolerance: float = 0.5
) -> Box:
    """Pixel box -> normalised Box; raises MaskError if it is empty or outside the image.

    ``tolerance`` (pixels) forgives the rounding of annotation tools; coordinates within it are
    clipped to the image.
    """
    if not all(np.isfinite(v) for v in (x1, y1, x2, y2)):
        raise MaskError(f"box for {label!r} has non-finite coordinates")
    if x2 <= x1 or y2 <= y1:
        raise MaskError(f"box for {label!r} is empty: [{x1:g}, {y1:g}, {x2:g}, {y2:g}]")
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        raise MaskError(f"box for {label!r} [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is outside the {width}x{height} image")
    x1, x2 = max(0.0, x1), min(float(width), x2)
    y1, y2 = max(0.0, y1), min(float(height), y2)
    return Box(label, x1 / width, y1 / height, x2 / width, y2 / height)


def check_normalised_box(box: Box, *, tolerance: float = 1e-3) -> Box:
    """Validate a box already in [0, 1] coordinates (YOLO style); clip tiny overshoots."""
    values = (box.x1, box.y1, box.x2, box.y2)
    if not all(np.isfinite(v) for v in values):
        raise MaskError(f"box for {box.label!r} has non-finite coordinates")
    if box.x2 <= box.x1 or box.y2 <= box.y1:
        raise MaskError(f"box for {box.label!r} is empty: {box.rounded()}")
    if min(values) < -tolerance or max(values) > 1 + tolerance:
        raise MaskError(f"box for {box.label!r} {box.rounded()} is outside the image")
    clip = lambda v: min(1.0, max(0.0, v))  # noqa: E731
    return Box(box.label, clip(box.x1), clip(box.y1), clip(box.x2), clip(box.y2))
