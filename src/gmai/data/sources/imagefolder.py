"""``imagefolder``: one folder per class (torchvision ImageFolder layout).

Layouts: ``ROOT/<class>/<image>`` or, when every top-level folder is a split name,
``ROOT/<split>/<class>/<image>``. Option ``folder_is``: ``label`` (default; classification
records), ``modality`` (folder names are modalities; perception records), or ``none`` (no labels;
images may also sit directly in ROOT; perception records).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from gmai.data.imaging import ImageReadError, read_image
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import (
    SPLITS,
    OptionError,
    list_images,
    limit_items,
    make_record,
    normalise_modality,
    normalise_split,
    record_fields,
    reject,
)

_FOLDER_ROLES = ("label", "modality", "none")


def _role(options: dict[str, str]) -> str:
    role = options.get("folder_is", "label").strip().lower() or "label"
    if role not in _FOLDER_ROLES:
        raise OptionError(f"option folder_is={role!r}; expected one of {', '.join(_FOLDER_ROLES)}")
    return role


def _split_roots(path: Path) -> list[tuple[str | None, Path]]:
    subdirs = sorted(p for p in path.iterdir() if p.is_dir())
    if subdirs and all(normalise_split(p.name) in SPLITS for p in subdirs):
        return [(normalise_split(p.name), p) for p in subdirs]
    return [(None, path)]


@lru_cache(maxsize=32)  # called per item; the folder tree does not change during a build
def _class_names(path: Path) -> list[str]:
    names = set()
    for _, root in _split_roots(path):
        names.update(p.name for p in root.iterdir() if p.is_dir())
    return sorted(names)


@register("imagefolder")
class ImageFolderSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[tuple[str | None, str | None, str]]:
        if not path.is_dir():
            raise FileNotFoundError(f"imagefolder source {path} is not a folder")
        role = _role(options)
        items: list[tuple[str | None, str | None, str]] = []
        for split, root in _split_roots(path):
            for image in list_images(root):  # images outside any class folder
                items.append((split, None, str(image.relative_to(path))))
            for folder in sorted(p for p in root.iterdir() if p.is_dir()):
                for image in list_images(folder, recursive=role == "none"):
                    items.append((split, folder.name, str(image.relative_to(path))))
        return limit_items(items, options)

    @staticmethod
    def load(path: Path, item: tuple[str | None, str | None, str], options: dict[str, str]) -> list[Record | Reject]:
        split, folder, rel = item
        role = _role(options)
        file = path / rel
        opts = dict(options)
        if split and "split" not in opts:
            opts["split"] = split
        if role == "modality" and folder and "modality" not in options:
            opts["modality"] = normalise_modality(folder)
        fields = record_fields(path, opts)
        if role == "label" and folder is None:
            return [reject(file, fields["source"], "image is not inside a class folder")]
        try:
            image = read_image(file)
        except ImageReadError as err:
            return [reject(file, fields["source"], err.reason)]
        if role == "label":
            return [make_record(image, file, fields, "classification", labels=[folder], label_set=_class_names(path))]
        return [make_record(image, file, fields, "perception")]
