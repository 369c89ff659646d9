"""Helpers shared by the source adapters: options, listings, label maps, rejects.

Options arrive as strings from ``KIND:PATH?key=value&...``. Common keys for every kind:
``name`` (dataset name -> ``Record.source``), ``modality``, ``department``, ``organ``, ``split``,
``limit`` (keep the first N items, for quick runs).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from gmai.data.modalities import default_department, normalise_modality  # noqa: F401 (re-exported to the sources)
from gmai.data.records import Record, Reject

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}

# The modality vocabulary (spellings, departments) lives in gmai.data.modalities.


class OptionError(ValueError):
    """A bad source option (unknown value, wrong type)."""


def normalise_split(text: str) -> str:
    return _SPLIT_ALIASES.get(text.strip().lower(), text.strip().lower())


def dataset_name(path: Path, options: dict[str, str], default: str | None = None) -> str:
    """``name=``, else the adapter's default (a public dataset's name, e.g. ``vqa-rad``), else "".

    Never the folder or file name: those can name a patient. The build names an unnamed source by
    its kind (``gmai.data.build._with_source_name``)."""
    if options.get("name"):
        return options["name"]
    return default or ""


def record_fields(
    path: Path,
    options: dict[str, str],
    *,
    default_modality: str = "",
    default_split: str = "train",
    default_name: str | None = None,
    default_organ: str = "",
) -> dict[str, Any]:
    """The Record fields every adapter sets the same way from options and defaults."""
    modality = normalise_modality(options.get("modality") or default_modality) or "unknown"
    return {
        "source": dataset_name(path, options, default_name),
        "modality": modality,
        "department": options.get("department", default_department(modality)),
        "organ": options.get("organ", default_organ),
        "split": normalise_split(options.get("split") or default_split),
    }


def reject(ref: str | Path, source: str, reason: str) -> Reject:
    return Reject(ref=str(ref), source=source, reason=reason, stage="read")


def int_option(options: dict[str, str], key: str, default: int) -> int:
    raw = options.get(key, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise OptionError(f"option {key}={raw!r} must be an integer") from None


def bool_option(options: dict[str, str], key: str, default: bool = False) -> bool:
    raw = options.get(key, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise OptionError(f"option {key}={raw!r} must be true or false")


def limit_items(items: list[Any], options: dict[str, str]) -> list[Any]:
    limit = int_option(options, "limit", 0)
    return items[:limit] if limit > 0 else items


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def parse_label_map(text: str) -> dict[int, str]:
    """``"1=liver,2=tumor"`` (or ``1:liver``) -> {1: "liver", 2: "tumor"}."""
    mapping: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        sep = "=" if "=" in part else ":"
        key, _, name = part.partition(sep)
        try:
            mapping[int(key)] = name.strip()
        except ValueError:
            raise OptionError(f"label map entry {part!r} must look like ID=NAME") from None
    return mapping


def label_map_from_json(data: Any) -> dict[int, str]:
    """Label maps as datasets write them: {"1": "liver"}, nnU-Net v2 {"liver": 1}, or a list.

    Background (id 0) is dropped.
    """
    mapping: dict[int, str] = {}
    if isinstance(data, list):
        mapping = {i: str(name) for i, name in enumerate(data)}
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, (int, float)) and not str(key).lstrip("-").isdigit():
                mapping[int(value)] = str(key)  # {"liver": 1}
            else:
                mapping[int(key)] = str(value)  # {"1": "liver"}
    mapping.pop(0, None)
    return {k: v for k, v in mapping.items() if v.strip().lower() != "background"}


def load_label_map(
    root: Path, options: dict[str, str], candidates: tuple[str, ...] = ("labels.json",)
) -> dict[int, str]:
    """Label map from the ``labels`` option, else the first sidecar JSON found under ``root``."""
    if options.get("labels"):
        return parse_label_map(options["labels"])
    for name in candidates:
        sidecar = root / name
        if sidecar.is_file():
            data = read_json(sidecar)
            if isinstance(data, dict) and "labels" in data:  # MSD / nnU-Net dataset.json
                data = data["labels"]
            return label_map_from_json(data)
    return {}


def read_json(path: Path) -> Any:
    """Parsed JSON, cached per (path, mtime) so each worker parses a big file once."""
    stat = path.stat()
    return _read_json_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _read_json_cached(path: str, mtime_ns: int, size: int) -> Any:
    with open(path, encoding="utf-8") as fh:
        try:
            return json.load(fh)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON ({err})") from None


def grouped_json(path: Path, key: str) -> dict[str, list[dict]]:
    """A JSON list of dicts grouped by ``key`` (e.g. questions by image), cached per (path, mtime)."""
    stat = path.stat()
    return _grouped_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, key)


@lru_cache(maxsize=8)
def _grouped_cached(path: str, mtime_ns: int, size: int, key: str) -> dict[str, list[dict]]:
    data = _read_json_cached(path, mtime_ns, size)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list")
    groups: dict[str, list[dict]] = {}
    for entry in data:
        if isinstance(entry, dict):
            groups.setdefault(str(entry.get(key, "")), []).append(entry)
    return groups


def parse_classes_option(options: dict[str, str]) -> list[str]:
    return [c.strip() for c in options.get("classes", "").split(",") if c.strip()]


def split_from_name(name: str, default: str = "train") -> str:
    """'instances_val2017.json' -> 'val'; first split word found in the lower-cased name."""
    lowered = name.lower()
    for alias in ("validation", "valid", "val", "train", "test", "dev"):
        if alias in lowered:
            return normalise_split(alias)
    return default


def make_record(image: Any, ref: str | Path, fields: dict[str, Any], task: str, **extra: Any) -> Record:
    return Record(image=image, ref=str(ref), task=task, **fields, **extra)


def check_window_option(options: dict[str, str]) -> None:
    """Fail early (at enumeration, not inside a worker) on an unknown ``window`` option."""
    from gmai.data.imaging import window_preset

    value = options.get("window", "").strip().lower()
    if value in ("", "auto", "file", "percentile", "mr"):
        return
    try:
        window_preset(value)
    except ValueError as err:
        raise OptionError(f"option window={value!r}: {err}; or use file / percentile") from None
