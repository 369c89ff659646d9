"""Source adapters: one small module per dataset layout, registered by its kind name.

A source is split in two so the build can run in parallel, resume, and stay byte-identical
whatever the worker count:

- ``items(path, options)`` enumerates work units cheaply (no pixel decoding), in a deterministic
  order. Items must be picklable (strings, tuples, small dicts).
- ``load(path, item, options)`` does the heavy work for one item and returns Records and Rejects.
  It never raises for bad input: a broken file becomes a ``Reject`` naming the file and the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmai.data.records import Record, Reject

Item = Any
ItemsFn = Callable[[Path, dict[str, str]], Iterable[Item]]
LoadFn = Callable[[Path, Item, dict[str, str]], list[Record | Reject]]


@dataclass(frozen=True)
class Source:
    kind: str
    items: ItemsFn
    load: LoadFn


# kind -> module that registers it (imported lazily so a missing optional dependency of one
# adapter never breaks the others).
_MODULES = {
    "imagefolder": "imagefolder",
    "csv": "csvlabels",
    "npz": "npz",
    "seg2d": "seg2d",
    "nifti": "nifti",
    "coco": "coco",
    "yolo": "yolo",
    "dicom": "dicom",
    "vqa-rad": "vqarad",
    "slake": "slake",
    "llava": "llava",
    "reports": "reports",
    "dicom-seg": "dicom_seg",
    "rtstruct": "rtstruct",
}
_REGISTRY: dict[str, Source] = {}


def register(kind: str) -> Callable[[type], type]:
    """Class decorator: the class provides ``items`` and ``load`` as static methods."""

    def wrap(cls: type) -> type:
        _REGISTRY[kind] = Source(kind, cls.items, cls.load)
        return cls

    return wrap


def kinds() -> list[str]:
    return sorted(_MODULES)


def get_source(kind: str) -> Source:
    if kind not in _MODULES:
        raise ValueError(f"unknown source kind {kind!r}; known kinds: {', '.join(kinds())}")
    if kind not in _REGISTRY:
        importlib.import_module(f"gmai.data.sources.{_MODULES[kind]}")
    return _REGISTRY[kind]


def parse_spec(spec: str) -> tuple[str, Path, dict[str, str]]:
    """``KIND:PATH?key=value&key2=v1,v2`` -> (kind, path, options)."""
    from urllib.parse import parse_qsl

    if ":" not in spec:
        raise ValueError(f"source {spec!r} must look like KIND:PATH[?key=value&...]")
    kind, rest = spec.split(":", 1)
    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    get_source(kind)  # fail early on an unknown kind
    return kind, Path(path), options
