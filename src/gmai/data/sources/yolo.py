"""``yolo``: YOLO detection layout: ``images/`` + ``labels/`` (``<cls> <cx> <cy> <w> <h>`` per line,
normalised), optionally one level of split folders (``images/train``, ``labels/train``).

Class names come from the ``classes`` option, ``classes.txt`` (one per line) or ``data.yaml``
(``names`` as a list or an id -> name mapping). An image without a label file is a negative
(no objects); an unknown class id, a malformed line, or a box outside the image rejects the image.
"""

from __future__ import annotations

from pathlib import Path

from gmai.data.imaging import ImageReadError, read_image
from gmai.data.masks import MaskError, check_normalised_box
from gmai.data.records import Box, Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import (
    SPLITS,
    OptionError,
    limit_items,
    list_images,
    make_record,
    normalise_split,
    parse_classes_option,
    record_fields,
    reject,
)


def class_names(path: Path, options: dict[str, str]) -> list[str]:
    names = parse_classes_option(options)
    if names:
        return names
    if (path / "classes.txt").is_file():
        return [n.strip() for n in (path / "classes.txt").read_text(encoding="utf-8").splitlines() if n.strip()]
    for yaml_name in ("data.yaml", "dataset.yaml"):
        if (path / yaml_name).is_file():
            import yaml

            names_field = (yaml.safe_load((path / yaml_name).read_text(encoding="utf-8")) or {}).get("names")
            if isinstance(names_field, dict):
                return [str(names_field[k]) for k in sorted(names_field, key=int)]
            if isinstance(names_field, list):
                return [str(n) for n in names_field]
    raise OptionError(f"{path}: no class names; pass classes=a,b or add classes.txt / data.yaml")


@register("yolo")
class YoloSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[tuple[str, str]]:
        images = path / "images"
        if not images.is_dir():
            raise FileNotFoundError(f"yolo source {path} has no images/ folder")
        class_names(path, options)
        items = []
        subdirs = sorted(p for p in images.iterdir() if p.is_dir() and normalise_split(p.name) in SPLITS)
        for folder, split in [(images, "")] + [(d, normalise_split(d.name)) for d in subdirs]:
            items.extend((str(f.relative_to(path)), split) for f in list_images(folder))
        return limit_items(items, options)

    @staticmethod
    def load(path: Path, item: tuple[str, str], options: dict[str, str]) -> list[Record | Reject]:
        rel, split = item
        names = class_names(path, options)
        fields = record_fields(path, {**options, **({"split": split} if split and "split" not in options else {})})
        file = path / rel
        label_file = (path / "labels" / Path(rel).relative_to("images")).with_suffix(".txt")
        try:
            image = read_image(file)
        except ImageReadError as err:
            return [reject(file, fields["source"], err.reason)]
        boxes = []
        lines = label_file.read_text(encoding="utf-8").splitlines() if label_file.is_file() else []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                boxes.append(_parse_line(line, names))
            except (ValueError, MaskError) as err:
                return [reject(f"{label_file}:{number}", fields["source"], str(err))]
        return [
            make_record(
                image,
                file,
                fields,
                "detection",
                labels=sorted({b.label for b in boxes}),
                label_set=list(names),
                boxes=boxes,
                meta={"objects": len(boxes)},
            )
        ]


def _parse_line(line: str, names: list[str]) -> Box:
    parts = line.split()
    if len(parts) != 5:
        raise ValueError(f"expected 'class cx cy w h', got {line.strip()!r}")
    cls, cx, cy, w, h = int(parts[0]), *(float(p) for p in parts[1:])
    if not 0 <= cls < len(names):
        raise ValueError(f"unknown class id {cls} (there are {len(names)} class names)")
    return check_normalised_box(Box(names[cls], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
