"""A volume as a sequence of slices: N windowed slices evenly spaced over the labelled extent, shown as N
images in one conversation (how current medical VLMs read CT/MR; LLaVA-style models take several images).

The 3-D sources (``nifti``, ``dicom-seg``, ``rtstruct``) call :func:`volume_records` with option
``volume=slices:N``. The record (task ``volume``) carries the N slices in ``Record.images`` and, in
``meta["volume"]``, what the questions may state, all about the N images shown (not the unseen slices
between them): which structures appear, on which image each is largest, on which side of the image it
lies (image as seen, as :mod:`gmai.data.masks` words it), and in how many of the images it appears.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gmai.data.masks import facts_for_label
from gmai.data.records import Record, Reject
from gmai.data.sources._common import make_record, reject


def evenly_spaced(first: int, last: int, count: int) -> list[int]:
    """``count`` slice indices from ``first`` to ``last`` inclusive, evenly spaced (fewer if the extent is short)."""
    return sorted(set(np.linspace(first, last, num=count).round().astype(int).tolist()))


def side_of(location: str) -> str:
    """'left upper' -> 'left', 'lower' -> 'center': the horizontal part of a location phrase."""
    return next((word for word in ("left", "right") if word in location.split()), "center")


def volume_records(
    frame_at: Callable[[int], np.ndarray],
    mask_at: Callable[[str, int], np.ndarray],
    areas: dict[str, np.ndarray],
    count: int,
    ref: str,
    fields: dict[str, Any],
    meta: dict[str, Any],
) -> list[Record | Reject]:
    """One volume record: ``frame_at(k)`` is slice k as displayed, ``mask_at(name, k)`` its 2-D mask of a
    structure, ``areas[name]`` the structure's pixel count in every slice."""
    total = np.sum([np.asarray(a) for a in areas.values()], axis=0) if areas else np.zeros(0)
    labelled = np.flatnonzero(total)
    if labelled.size == 0:
        return []
    indices = evenly_spaced(int(labelled[0]), int(labelled[-1]), count)
    where = f"{ref}#volume=slices:{','.join(map(str, indices))}"
    if len(indices) < 2:
        return [reject(where, fields["source"], f"labelled extent is {len(indices)} slice: no {count}-slice volume sample")]
    structures: dict[str, dict[str, Any]] = {}
    for name in sorted(areas):
        shown = [int(areas[name][k]) for k in indices]
        images = [j + 1 for j, area in enumerate(shown) if area > 0]
        if not images:
            continue
        largest = int(np.argmax(shown))
        fact = facts_for_label(mask_at(name, indices[largest]), name)
        structures[name] = {"images": images, "largest": largest + 1, "side": side_of(fact.location),
                            "extent": len(images)}
    if not structures:
        return [reject(where, fields["source"], "no structure appears on the chosen slices")]
    frames = [np.ascontiguousarray(frame_at(k)) for k in indices]
    label_set = meta.pop("label_set", None) or sorted(areas)
    volume = {"slices": indices, "count": len(indices), "structures": structures}
    return [make_record(frames[0], where, fields, "volume", labels=sorted(structures), label_set=label_set,
                        images=frames, meta={**meta, "volume": volume, "dim": "3d"})]
