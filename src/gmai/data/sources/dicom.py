"""``dicom``: DICOM files: a single file, a folder of files, or a folder of series folders.

Every file is read through :func:`gmai.data.imaging.read_dicom`, which de-identifies the header
(:mod:`gmai.data.deid`) before anything reads it, rejects non-image objects (SEG, RT, SR, ...) and
truncated files, and applies the burned-in text policy, option ``burned_in``: ``reject`` (default:
every file at risk, see :func:`gmai.data.deid.burned_in_risk`, is rejected), ``ocr`` (at-risk files are
kept when Tesseract finds no legible text) or ``redact`` (the words found are blacked out). Then rescale
slope/intercept, the window (option ``window``: a CT preset, ``file``, ``percentile``; default: the
file's own window, else soft tissue for CT, else percentiles) and MONOCHROME1 inversion. Multi-frame
files give up to ``max_frames`` (default 8) evenly spaced frames. Records carry only
:func:`gmai.data.imaging.safe_header_summary` fields in ``meta``.

File and folder names often hold a patient's name, MRN or birth date, so none of them leaves this
adapter: ``ref`` is ``dicom-<HMAC of the relative path>`` keyed with the build's secret (see
:func:`gmai.data.deid.keyed_hash`), the series is the HMAC of the folder, and the dataset name is
``name=`` or ``dicom``, never a folder name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmai.data.deid import current_options, keyed_hash
from gmai.data.imaging import BURNED_IN_MODES, ImageReadError, read_dicom
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import (
    OptionError,
    check_window_option,
    int_option,
    limit_items,
    make_record,
    record_fields,
    reject,
)

DEFAULT_NAME = "dicom"
_REMOVED_OPTIONS = {"hash_paths": "paths are always hashed now",
                    "allow_burned_in": "use burned_in=ocr or burned_in=redact"}


def _looks_like_dicom(p: Path) -> bool:
    """Every file but a DICOMDIR index: archives name DICOM files anything (``IM0001``, ``DOE.JOHN``), and a
    file that is not DICOM becomes a reject saying so rather than being skipped unseen."""
    return p.is_file() and p.name.upper() != "DICOMDIR"


@register("dicom")
class DicomSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[str]:
        check_window_option(options)
        _burned_in_mode(options)
        if path.is_file():
            return [path.name]
        if not path.is_dir():
            raise FileNotFoundError("dicom source does not exist")
        files = sorted(p for p in path.rglob("*") if _looks_like_dicom(p))
        return limit_items([str(p.relative_to(path)) for p in files], options)

    @staticmethod
    def load(path: Path, item: str, options: dict[str, str]) -> list[Record | Reject]:
        root = path.parent if path.is_file() else path
        shown = hashed_ref(item)
        probe = record_fields(path, options, default_name=DEFAULT_NAME)
        try:
            image = read_dicom(root / item, window=options.get("window") or None, burned_in=_burned_in_mode(options))
        except ImageReadError as err:
            return [reject(shown, probe["source"], err.reason)]
        opts = dict(options)
        opts.setdefault("modality", image.modality)
        fields = record_fields(path, opts, default_name=DEFAULT_NAME,
                               default_organ=str(image.summary.get("body_part", "")))
        folder = str(Path(item).parent)
        series = keyed_hash(current_options().secret, "series\0" + folder) if folder != "." else ""
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


def hashed_ref(item: str, kind: str = "dicom") -> str:
    """A file's ref: an HMAC of its path relative to the source, keyed with this build's secret (``kind``
    names the source kind, so a ref says which adapter read the file and nothing about its name)."""
    return f"{kind}-" + keyed_hash(current_options().secret, "ref\0" + item)


def _burned_in_mode(options: dict[str, str]) -> str:
    for key, hint in _REMOVED_OPTIONS.items():
        if key in options:
            raise OptionError(f"dicom option {key} is no longer accepted: {hint}")
    mode = options.get("burned_in", "reject").strip().lower() or "reject"
    if mode not in BURNED_IN_MODES:
        raise OptionError(f"option burned_in={mode!r}: use one of {', '.join(BURNED_IN_MODES)}")
    return mode


def _pick_frames(count: int, wanted: int) -> list[int]:
    if wanted <= 0 or count <= wanted:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, num=wanted).round().astype(int).tolist()))
