"""``dicom``: DICOM files: a single file, a folder of files, or a folder of series folders.

Every file is read through :func:`gmai.data.imaging.read_dicom`, which de-identifies the header
before anything reads it, rejects ``BurnedInAnnotation=YES`` (option ``allow_burned_in=true``
to keep them), rejects non-image objects (SEG, RT, SR, ...) and truncated files, applies rescale
slope/intercept, the window (option ``window``: a CT preset, ``file``, ``percentile``; default:
the file's own window, else soft tissue for CT, else percentiles) and inverts MONOCHROME1.
Multi-frame files give up to ``max_frames`` (default 8) evenly spaced frames. Records carry only
:func:`gmai.data.imaging.safe_header_summary` fields in ``meta``; the series is the file's folder.

File and folder *names* are not DICOM attributes and are kept in ``ref`` so a reject can be
found; when an archive names folders after patients, pass ``hash_paths=true`` and refs become
``ROOT/<digest of the relative path>`` (the series grouping keeps working on the digests).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from gmai.data.imaging import ImageReadError, read_dicom
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import (
    bool_option,
    check_window_option,
    int_option,
    limit_items,
    make_record,
    record_fields,
    reject,
)

_DICOM_EXTS = {".dcm", ".dicom", ".ima", ""}
_BODY_PARTS = {
    "abdomen": "abdomen",
    "chest": "chest",
    "head": "head",
    "brain": "brain",
    "extremity": "extremity",
    "pelvis": "pelvis",
    "breast": "breast",
    "spine": "spine",
    "neck": "neck",
    "knee": "knee",
    "whole body": "whole body",
    "heart": "heart",
    "liver": "liver",
}


def _looks_like_dicom(p: Path) -> bool:
    return (
        p.is_file() and p.suffix.lower() in _DICOM_EXTS and p.name.upper() != "DICOMDIR" and not p.name.startswith(".")
    )


@register("dicom")
class DicomSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[str]:
        check_window_option(options)
        if path.is_file():
            return [path.name]
        if not path.is_dir():
            raise FileNotFoundError(f"dicom source {path} does not exist")
        files = sorted(p for p in path.rglob("*") if _looks_like_dicom(p))
        return limit_items([str(p.relative_to(path)) for p in files], options)

    @staticmethod
    def load(path: Path, item: str, options: dict[str, str]) -> list[Record | Reject]:
        root = path.parent if path.is_file() else path
        file = root / item
        hashed = bool_option(options, "hash_paths", False)
        shown = root / _digest(item) if hashed else file  # what refs and rejects show
        probe = record_fields(path, options)
        try:
            image = read_dicom(
                file,
                window=options.get("window") or None,
                allow_burned_in=bool_option(options, "allow_burned_in", False),
            )
        except ImageReadError as err:
            return [reject(shown, probe["source"], err.reason)]
        opts = dict(options)
        opts.setdefault("modality", image.modality)
        body_part = str(image.summary.get("body_part", "")).strip().lower()
        fields = record_fields(path, opts, default_organ=_BODY_PARTS.get(body_part, body_part))
        series = str(Path(item).parent) if str(Path(item).parent) != "." else ""
        series = _digest(series) if hashed and series else series
        meta = {"dicom": image.summary, "windowing": image.windowing, "series": series, "notes": image.notes}
        frames = _pick_frames(len(image.frames), int_option(options, "max_frames", 8))
        multi = len(image.frames) > 1
        return [
            make_record(
                image.frames[i],
                f"{shown}#frame={i}" if multi else shown,
                fields,
                "perception",
                meta={**meta, **({"frame": i} if multi else {})},
            )
            for i in frames
        ]


def _digest(relative: str) -> str:
    return hashlib.sha256(relative.encode()).hexdigest()[:16]


def _pick_frames(count: int, wanted: int) -> list[int]:
    if wanted <= 0 or count <= wanted:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, num=wanted).round().astype(int).tolist()))
