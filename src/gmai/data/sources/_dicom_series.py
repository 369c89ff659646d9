"""What ``dicom-seg`` and ``rtstruct`` share: find the series a file annotates, read it, turn masks into records.

Every file is read through :func:`gmai.data.imaging.read_dicom_dataset` / :func:`~gmai.data.imaging.read_dicom`,
so headers are de-identified before anything looks at them. De-identification replaces each instance UID by
the same hash wherever it occurs, so a SEG's or RTSTRUCT's references still match the series it annotates.
Matching is by UID inside the source folder only (SeriesInstanceUID, then SOPInstanceUID per slice).

As in the ``dicom`` source, no file or folder name leaves these adapters: a ref is ``<kind>-<HMAC of the
SEG/RTSTRUCT file's path relative to the source>`` (:func:`gmai.data.sources.dicom.hashed_ref`) and the
dataset name is ``name=`` or the source kind, never the folder's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from gmai.data.deid import DeidOptions, current_options
from gmai.data.imaging import ImageReadError, read_dicom, read_dicom_dataset
from gmai.data.masks import facts_for_label
from gmai.data.records import Record, Reject
from gmai.data.sources._common import OptionError, int_option, make_record, reject
from gmai.data.sources.dicom import _looks_like_dicom, hashed_ref

SOURCE_KINDS = {"SEG": "dicom-seg", "RTSTRUCT": "rtstruct"}


@dataclass(frozen=True)
class FolderIndex:
    """The DICOM files under a source folder, by role (header-only reads, de-identified)."""

    series: dict[str, tuple[str, ...]]  # SeriesInstanceUID -> image files (relative paths)
    annotations: dict[str, tuple[str, ...]]  # "SEG" / "RTSTRUCT" -> files
    unreadable: tuple[tuple[str, str], ...]  # (file, reason)


def folder_index(root: Path) -> FolderIndex:
    files = sorted(p for p in root.rglob("*") if _looks_like_dicom(p))
    signature = tuple((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in files)
    # the index holds remapped UIDs, so it is only valid under the de-identification options (secret) it was
    # read with: a build sets its own secret after a first look at the folder, and its annotations are read
    # with that secret, so a cached index from another secret would match no series
    return _index(str(root), signature, current_options())


@lru_cache(maxsize=4)
def _index(root: str, signature: tuple[tuple[str, int], ...], options: DeidOptions) -> FolderIndex:
    series: dict[str, list[str]] = {}
    annotations: dict[str, list[str]] = {"SEG": [], "RTSTRUCT": []}
    unreadable = []
    for relative, _ in signature:
        try:
            ds = read_dicom_dataset(Path(root) / relative, pixels=False)
        except ImageReadError as err:
            unreadable.append((relative, err.reason))
            continue
        modality = str(ds.get("Modality", ""))
        if modality in annotations:
            annotations[modality].append(relative)
        elif "SeriesInstanceUID" in ds:
            series.setdefault(str(ds.SeriesInstanceUID), []).append(relative)
    return FolderIndex({k: tuple(v) for k, v in series.items()}, {k: tuple(v) for k, v in annotations.items()},
                       tuple(unreadable))


def annotation_items(path: Path, modality: str, options: dict[str, str]) -> list[str]:
    from gmai.data.sources._common import check_window_option, limit_items

    check_window_option(options)
    volume_option(options)
    if not path.is_dir():
        raise FileNotFoundError(f"{modality.lower()} source {path} is not a folder (it holds the series and the "
                                f"{modality} files that annotate it)")
    return limit_items(list(folder_index(path).annotations[modality]), options)


@dataclass
class Series:
    """A CT/MR series sorted along its slice normal: de-identified headers and display frames."""

    headers: list[Any]
    frames: np.ndarray  # (slices, rows, cols) uint8, as displayed
    windowing: str
    summary: dict[str, Any]


def slice_position(ds: Any) -> float:
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return float(normal @ np.asarray(ds.ImagePositionPatient, dtype=float))


def load_series(root: Path, files: tuple[str, ...], options: dict[str, str]) -> Series:
    """Headers and display pixels of one series; raises ImageReadError (naming the file) when unusable."""
    pairs = []
    for relative in files:
        header = read_dicom_dataset(root / relative, pixels=False)
        if "ImagePositionPatient" not in header or "ImageOrientationPatient" not in header:
            raise ImageReadError(root / relative, "image has no ImagePositionPatient/ImageOrientationPatient: "
                                                  "its slices cannot be placed")
        pairs.append((slice_position(header), relative, header))
    pairs.sort(key=lambda p: p[0])
    images = [read_dicom(root / relative, window=options.get("window") or None) for _, relative, _ in pairs]
    shapes = {image.frames[0].shape for image in images}
    if len(shapes) != 1 or any(len(image.frames) != 1 or image.frames[0].ndim != 2 for image in images):
        raise ImageReadError(root / files[0], f"series slices are not single grayscale frames of one size ({shapes})")
    return Series([h for _, _, h in pairs], np.stack([image.frames[0] for image in images]), images[0].windowing,
                  images[0].summary)


def match_series(root: Path, referenced: str, annotation: str) -> tuple[str, ...]:
    """The files of the referenced series; raises ImageReadError when the folder does not hold it."""
    index = folder_index(root)
    files = index.series.get(referenced)
    if not files:
        raise ImageReadError(root / annotation, f"references series {referenced}, which is not in the source folder "
                                                f"({len(index.series)} series found there)")
    return files


def load_annotated(
    path: Path, item: str, options: dict[str, str], annotation: str,
    parse: Callable[[Any, Path], tuple[Any, str]],
    masks_of: Callable[[Any, Series, str, str], tuple[dict[str, np.ndarray], list[Reject]]],
) -> list[Record | Reject]:
    """One SEG/RTSTRUCT file -> records: ``parse(dataset, file)`` gives (the parsed object, the referenced
    SeriesInstanceUID); ``masks_of(object, series, ref, source)`` gives {structure: mask} and rejects."""
    from gmai.data.sources._common import record_fields

    file = path / item
    kind = SOURCE_KINDS[annotation]
    shown = hashed_ref(item, kind)
    probe = record_fields(path, options, default_name=kind)
    try:
        parsed, referenced = parse(read_dicom_dataset(file), file)
        series = load_series(path, match_series(path, referenced, item), options)
    except ImageReadError as err:  # the reason names the problem; the ref is the annotation file's hash
        return [reject(shown, probe["source"], err.reason)]
    fields = record_fields(path, {"modality": series.summary.get("modality", ""), **options}, default_name=kind)
    masks, rejects = masks_of(parsed, series, shown, fields["source"])
    if not masks:
        return [*rejects, reject(shown, fields["source"], f"no {annotation} structure with foreground on the "
                                                          "referenced series")]
    meta = {"dicom": series.summary, "windowing": series.windowing, "annotation": annotation, "dim": "3d"}
    return [*rejects, *structure_records(series, masks, shown, fields, options, meta)]


# --------------------------------------------------------------------------------------------
# Structures -> records


def structure_records(
    series: Series, masks: dict[str, np.ndarray], ref: str, fields: dict[str, Any], options: dict[str, str],
    meta: dict[str, Any],
) -> list[Record | Reject]:
    """One segmentation record per slice with foreground (mask facts per structure), the SA-Med2D recipe of
    the ``nifti`` source: structures below ``min_area`` pixels in a slice are left out of that slice, slices
    without any structure are reported in one summary reject; plus, with ``volume=slices:N``, volume records."""
    from gmai.data.sources.nifti import _ranges

    slices, rows, cols = series.frames.shape
    min_area = int_option(options, "min_area", max(10, round(0.001 * rows * cols)))
    label_set = sorted(masks)
    out: list[Record | Reject] = []
    empty: list[int] = []
    for index in range(slices):
        facts, small = [], []
        for name in label_set:
            area = int(np.count_nonzero(masks[name][index]))
            if 0 < area < min_area:
                small.append(f"{name}: {area} px")
            elif area:
                facts.append(facts_for_label(masks[name][index], name))
        if not facts:
            if small:
                out.append(reject(f"{ref}#slice={index}", fields["source"],
                                  f"foreground below min_area={min_area} px ({', '.join(small)})"))
            else:
                empty.append(index)
            continue
        out.append(make_record(
            series.frames[index], f"{ref}#slice={index}", fields, "segmentation",
            labels=[f.label for f in facts], label_set=label_set, boxes=[f.box for f in facts], mask_facts=facts,
            meta={**meta, "slice": index, **({"dropped_small": ", ".join(small)} if small else {})},
        ))
    if empty:
        out.append(reject(f"{ref}#slice={_ranges(empty)}", fields["source"],
                          f"{len(empty)} slice(s) without foreground skipped (SA-Med2D recipe keeps labelled slices)"))
    count = volume_option(options)
    if count:
        from gmai.data.sources.volume import volume_records

        areas = {name: mask.sum(axis=(1, 2)) for name, mask in masks.items()}
        out.extend(volume_records(lambda k: series.frames[k], lambda name, k: masks[name][k], areas, count, ref,
                                  fields, {**meta, "label_set": label_set}))
    return out


def volume_option(options: dict[str, str]) -> int:
    """``volume=slices:N`` -> N (0 when absent); a malformed value is an OptionError."""
    raw = options.get("volume", "").strip().lower()
    if not raw or raw in ("none", "off"):
        return 0
    kind, _, number = raw.partition(":")
    if kind != "slices" or not number.isdigit() or not 2 <= int(number) <= 32:
        raise OptionError(f"option volume={raw!r}: expected slices:N with N from 2 to 32")
    return int(number)

