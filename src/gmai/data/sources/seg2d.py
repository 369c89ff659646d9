"""``seg2d``: 2-D image + mask pairs (PNG), with a label map id -> name.

Layout: ``ROOT/images/<name>.<ext>`` and ``ROOT/masks/<name>.png`` (a mask may also be named
``<name>_mask.png``). Masks hold one integer label id per pixel (0 = background). The label map
comes from the ``labels`` option (``labels=1=lesion,2=kidney``) or ``ROOT/labels.json``
(``{"1": "lesion"}``). A 0/255 mask with a one-label map is read as that label (a common export).
Images without a mask and masks without an image are rejected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmai.data.imaging import ImageReadError, read_image, read_label_image
from gmai.data.masks import MaskError, check_mask_shape, mask_facts
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import (
    OptionError,
    limit_items,
    list_images,
    load_label_map,
    make_record,
    record_fields,
    reject,
)


def _mask_for(image: Path, mask_dir: Path) -> Path | None:
    for candidate in (mask_dir / f"{image.stem}.png", mask_dir / f"{image.stem}_mask.png", mask_dir / image.name):
        if candidate.is_file():
            return candidate
    return None


def _label_map(path: Path, options: dict[str, str]) -> dict[int, str]:
    labels = load_label_map(path, options)
    if not labels:
        raise OptionError(f"{path}: no label map; pass labels=1=name,... or add labels.json")
    return labels


@register("seg2d")
class Seg2DSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[tuple[str, str | None]]:
        image_dir, mask_dir = path / options.get("images", "images"), path / options.get("masks", "masks")
        if not image_dir.is_dir() or not mask_dir.is_dir():
            raise FileNotFoundError(f"seg2d source {path} needs images/ and masks/ folders")
        _label_map(path, options)
        items: list[tuple[str, str | None]] = []
        paired: set[Path] = set()
        for image in list_images(image_dir):
            mask = _mask_for(image, mask_dir)
            if mask is not None:
                paired.add(mask)
            items.append((str(image.relative_to(path)), str(mask.relative_to(path)) if mask else None))
        for mask in list_images(mask_dir):  # orphan masks: reported, not dropped
            if mask not in paired:
                items.append(("", str(mask.relative_to(path))))
        return limit_items(items, options)

    @staticmethod
    def load(path: Path, item: tuple[str, str | None], options: dict[str, str]) -> list[Record | Reject]:
        image_rel, mask_rel = item
        fields = record_fields(path, options)
        labels = _label_map(path, options)
        if not image_rel:
            return [reject(path / str(mask_rel), fields["source"], "mask has no matching image")]
        image_file = path / image_rel
        if mask_rel is None:
            return [reject(image_file, fields["source"], "image has no matching mask")]
        mask_file = path / mask_rel
        try:
            image = read_image(image_file)
            mask = read_label_image(mask_file)
        except ImageReadError as err:
            return [reject(err.path, fields["source"], err.reason)]
        mask = _binary_export_fix(mask, labels)
        try:
            check_mask_shape(image, mask)
            facts = mask_facts(mask, labels)
        except MaskError as err:
            return [reject(mask_file, fields["source"], str(err))]
        return [
            make_record(
                image,
                image_file,
                fields,
                "segmentation",
                labels=sorted({f.label for f in facts}),
                label_set=sorted(set(labels.values())),
                boxes=[f.box for f in facts],
                mask_facts=facts,
                meta={"mask": str(mask_file)},
            )
        ]


def _binary_export_fix(mask: np.ndarray, labels: dict[int, str]) -> np.ndarray:
    """Masks saved as 0/255 for a single label are read as 0/<that label id>."""
    values = set(np.unique(mask).tolist())
    if len(labels) == 1 and values <= {0, 255} and 255 not in labels:
        (only,) = labels
        return np.where(mask == 255, only, 0)
    return mask
