"""``coco``: COCO detection JSON (``images``, ``annotations``, ``categories``).

PATH is the annotation JSON, or a folder holding ``annotations.json`` (or one
``annotations/*.json``). Image files are looked up under the ``images`` option, else
``<folder>/images/``, else next to the JSON. Boxes are COCO ``[x, y, width, height]`` in pixels
and become normalised ``Box`` objects; a box outside the image, an empty box, or an unknown
``category_id`` rejects the image (naming the annotation). Images without annotations become
records with no boxes (true negatives). The split comes from the ``split`` option or the JSON
file name (``instances_val2017.json`` -> val).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from gmai.data.imaging import ImageReadError, read_image
from gmai.data.masks import MaskError, normalise_box
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import limit_items, make_record, read_json, record_fields, reject, split_from_name


def annotation_file(path: Path) -> Path:
    if path.is_file():
        return path
    for candidate in [path / "annotations.json", *sorted((path / "annotations").glob("*.json"))]:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"coco source {path}: no annotations.json or annotations/*.json")


def _image_dir(path: Path, ann_file: Path, options: dict[str, str]) -> Path:
    if options.get("images"):
        return Path(options["images"])
    base = path if path.is_dir() else ann_file.parent
    for candidate in (base / "images", ann_file.parent / "images", ann_file.parent.parent / "images"):
        if candidate.is_dir():
            return candidate
    return ann_file.parent


@lru_cache(maxsize=4)
def _index(ann_file: str, mtime_ns: int) -> tuple[dict, dict, dict]:
    """(images by id, annotations by image id, category names by id) for one JSON file."""
    data = read_json(Path(ann_file))
    images = {img["id"]: img for img in data.get("images", [])}
    by_image: dict = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    categories = {c["id"]: str(c.get("name", "")).strip() for c in data.get("categories", [])}
    return images, by_image, categories


def _load_index(ann_file: Path) -> tuple[dict, dict, dict]:
    return _index(str(ann_file.resolve()), ann_file.stat().st_mtime_ns)


@register("coco")
class CocoSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[int]:
        images, by_image, _ = _load_index(annotation_file(path))
        ids = sorted(images)
        orphans = sorted(set(by_image) - set(images), key=str)
        return limit_items(ids + [("orphan", i) for i in orphans], options)

    @staticmethod
    def load(path: Path, item, options: dict[str, str]) -> list[Record | Reject]:
        ann_file = annotation_file(path)
        images, by_image, categories = _load_index(ann_file)
        fields = record_fields(path, {**options, "split": options.get("split") or split_from_name(ann_file.name)})
        if isinstance(item, (tuple, list)):  # annotations pointing at an image id that is not listed
            return [
                reject(f"{ann_file}#image_id={item[1]}", fields["source"], "annotations refer to an unknown image_id")
            ]
        info = images[item]
        file = _image_dir(path, ann_file, options) / str(info.get("file_name", ""))
        try:
            image = read_image(file)
        except ImageReadError as err:
            return [reject(file, fields["source"], err.reason)]
        height, width = image.shape[:2]
        if (info.get("height"), info.get("width")) not in ((None, None), (height, width)):
            return [
                reject(
                    file,
                    fields["source"],
                    f"JSON says {info.get('width')}x{info.get('height')} but the file is {width}x{height}",
                )
            ]
        boxes = []
        for ann in by_image.get(item, []):
            name = categories.get(ann.get("category_id"))
            if not name:
                return [
                    reject(
                        file,
                        fields["source"],
                        f"annotation {ann.get('id')} has unknown or unnamed category_id {ann.get('category_id')}",
                    )
                ]
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
                boxes.append(normalise_box(name, x, y, x + w, y + h, width, height))
            except (KeyError, TypeError, ValueError) as err:  # MaskError is a ValueError
                reason = str(err) if isinstance(err, MaskError) else f"malformed bbox ({err})"
                return [reject(file, fields["source"], f"annotation {ann.get('id')}: {reason}")]
        return [
            make_record(
                image,
                file,
                fields,
                "detection",
                labels=sorted({b.label for b in boxes}),
                label_set=sorted(set(categories.values())),
                boxes=boxes,
                meta={"image_id": item, "objects": len(boxes)},
            )
        ]
