"""``npz``: MedMNIST-style arrays: ``train_images``/``train_labels``, ``val_*``, ``test_*``.

Images are (N, H, W) or (N, H, W, 3) uint8; labels (N,) or (N, 1) integer class ids (multi-label
(N, K) 0/1 arrays are read as the set of positive classes). Class names come from the ``classes``
option (``classes=a,b,c``, index order) or a sidecar ``<file>.json`` (``{"0": "a", ...}``, a list,
or MedMNIST's ``{"label": {...}}``) or ``<file>.txt`` (one name per line). Without names the
source is rejected: a label must mean something.

Items are chunks of indices, so a worker decompresses each array once (cached per process).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from gmai.data.imaging import to_uint8
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import (
    OptionError,
    limit_items,
    make_record,
    normalise_split,
    parse_classes_option,
    record_fields,
    reject,
)

CHUNK = 256
_PREFIXES = ("train", "val", "test")


def class_names(path: Path, options: dict[str, str]) -> list[str]:
    names = parse_classes_option(options)
    if names:
        return names
    for sidecar in (path.with_suffix(".json"), path.with_suffix(".txt")):
        if sidecar.is_file():
            return _names_from_sidecar(sidecar)
    raise OptionError(f"{path}: no class names; pass classes=a,b,... or add {path.with_suffix('.json').name}")


def _names_from_sidecar(sidecar: Path) -> list[str]:
    if sidecar.suffix == ".txt":
        return [line.strip() for line in sidecar.read_text(encoding="utf-8").splitlines() if line.strip()]
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "label" in data:  # MedMNIST INFO dict
        data = data["label"]
    if isinstance(data, list):
        return [str(x) for x in data]
    return [str(data[k]) for k in sorted(data, key=lambda k: int(k))]


@lru_cache(maxsize=4)
def _array(path: str, mtime_ns: int, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return data[key]


def _get(path: Path, key: str) -> np.ndarray:
    return _array(str(path.resolve()), path.stat().st_mtime_ns, key)


@register("npz")
class NpzSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[tuple[str, int, int]]:
        if not path.is_file():
            raise FileNotFoundError(f"npz source {path} is not a file")
        class_names(path, options)  # fail early, once, when the vocabulary is missing
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            prefixes = [p for p in _PREFIXES if f"{p}_images" in keys]
            if not prefixes:
                raise ValueError(f"{path}: no <split>_images arrays (found {sorted(keys)})")
            sizes = {p: len(data[f"{p}_labels"]) if f"{p}_labels" in keys else 0 for p in prefixes}
        items = []
        for prefix in prefixes:
            for start in range(0, sizes[prefix], CHUNK):
                items.append((prefix, start, min(start + CHUNK, sizes[prefix])))
            if sizes[prefix] == 0:
                items.append((prefix, 0, 0))  # images without labels: reported by load
        return limit_items(items, options)

    @staticmethod
    def load(path: Path, item: tuple[str, int, int], options: dict[str, str]) -> list[Record | Reject]:
        prefix, start, stop = item
        names = class_names(path, options)
        fields = record_fields(path, {**options, "split": options.get("split") or normalise_split(prefix)})
        if stop == start:
            return [
                reject(f"{path}#{prefix}_labels", fields["source"], f"{prefix}_images has no {prefix}_labels array")
            ]
        images, labels = _get(path, f"{prefix}_images"), _get(path, f"{prefix}_labels")
        if len(images) != len(labels):
            return [
                reject(
                    f"{path}#{prefix}",
                    fields["source"],
                    f"{prefix}_images has {len(images)} rows but {prefix}_labels has {len(labels)}",
                )
            ]
        out: list[Record | Reject] = []
        for index in range(start, stop):
            ref = f"{path}#{prefix}[{index}]"
            try:
                label_names = _label_names(labels[index], names)
            except ValueError as err:
                out.append(reject(ref, fields["source"], str(err)))
                continue
            image = _as_uint8_image(images[index])
            if image is None:
                out.append(reject(ref, fields["source"], f"image has unsupported shape {images[index].shape}"))
                continue
            out.append(make_record(image, ref, fields, "classification", labels=label_names, label_set=list(names)))
        return out


def _label_names(row: np.ndarray, names: list[str]) -> list[str]:
    values = np.atleast_1d(np.asarray(row)).ravel()
    if values.size == 1:  # (N,) or (N, 1): one class id
        index = int(values[0])
        if not 0 <= index < len(names):
            raise ValueError(f"label id {index} outside the {len(names)} class names")
        return [names[index]]
    if values.size != len(names):  # multi-label 0/1 vector
        raise ValueError(f"multi-label row has {values.size} entries but there are {len(names)} class names")
    return [names[i] for i in np.flatnonzero(values)]


def _as_uint8_image(arr: np.ndarray) -> np.ndarray | None:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3):
        return np.ascontiguousarray(to_uint8(arr))
    return None
