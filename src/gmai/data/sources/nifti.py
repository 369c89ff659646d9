"""``nifti``: 3-D volumes (+ optional label maps) sliced to 2-D, the SA-Med2D-20M recipe.

Layouts: a folder with ``images/`` (or nnU-Net/MSD ``imagesTr``/``imagesTs``) and ``labels/``
(``labelsTr``) holding files of the same name (an nnU-Net channel suffix ``_0000`` is ignored);
a plain folder of volumes; or a single volume file. The label map id -> name comes from the
``labels`` option or ``labels.json``/``dataset.json`` (MSD ``{"1": "liver"}`` and nnU-Net v2
``{"liver": 1}`` forms); the modality from the ``modality`` option or dataset.json.

Recipe for labelled volumes: reorient to RAS+, slice along ``axis`` (default 2, axial), drop a
label from a slice when its area is below ``min_area`` pixels (default: 0.1% of the slice, at
least 10), keep slices with foreground left, derive boxes and mask facts. Slices that end up
with no foreground are reported in one summary reject per volume (``empty_every=N`` keeps every
Nth of them as a negative record instead). Intensities: ``window`` = a CT preset
(soft-tissue, lung, bone, brain) or ``percentile`` (0.5-99.5, MR); default by modality.
Unlabelled volumes give up to ``max_slices`` (default 16) evenly spaced perception records.

Per-structure mask folders (the TotalSegmentator layout): ``ROOT/<case>/ct.nii.gz`` (or any one volume
in the case folder) with ``ROOT/<case>/segmentations/<structure>.nii.gz``, one binary mask per structure,
the file name being the structure's name; ``ROOT/meta.csv`` (semicolon-separated, ``image_id`` and
``split`` columns), when present, gives each case's split. The masks are combined into one label map
(ids by sorted name) and follow the same recipe; all-empty masks (structures outside the field of view)
are left out, and voxels claimed by two masks are reported.

``volume=slices:N`` (2-32) also writes, per labelled volume, one sample of N windowed slices evenly
spaced over the labelled extent, as N images in one conversation with volume-level questions
(:mod:`gmai.data.sources.volume`); ``volume_only=true`` writes only those.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmai.data.imaging import ImageReadError, load_nifti, volume_slice, volume_to_uint8
from gmai.data.masks import facts_for_label
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._dicom_series import volume_option
from gmai.data.sources.volume import volume_records
from gmai.data.sources._common import (
    OptionError,
    bool_option,
    check_window_option,
    int_option,
    label_map_from_json,
    limit_items,
    make_record,
    normalise_modality,
    parse_label_map,
    read_json,
    record_fields,
    reject,
)

_IMAGE_DIRS = ("images", "imagesTr", "imagesTs", "imagesVal")
_LABEL_DIRS = {"images": "labels", "imagesTr": "labelsTr", "imagesTs": "labelsTs", "imagesVal": "labelsVal"}
_SPLIT_OF_DIR = {"imagesTs": "test", "imagesVal": "val"}


def _is_nifti(p: Path) -> bool:
    return p.is_file() and (p.name.endswith(".nii") or p.name.endswith(".nii.gz"))


def _case_name(p: Path) -> str:
    stem = p.name[:-7] if p.name.endswith(".nii.gz") else p.name[:-4]
    return stem[:-5] if stem.endswith("_0000") else stem


def _find_label(image: Path, label_dir: Path) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        candidate = label_dir / f"{_case_name(image)}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _dataset_json(root: Path) -> dict:
    sidecar = root / "dataset.json"
    data = read_json(sidecar) if sidecar.is_file() else {}
    return data if isinstance(data, dict) else {}


def _label_map(root: Path, options: dict[str, str]) -> dict[int, str]:
    if options.get("labels"):
        return parse_label_map(options["labels"])
    if (root / "labels.json").is_file():
        return label_map_from_json(read_json(root / "labels.json"))
    return label_map_from_json(_dataset_json(root).get("labels", {}))


def _modality(root: Path, options: dict[str, str]) -> str:
    if options.get("modality"):
        return normalise_modality(options["modality"])
    info = _dataset_json(root)
    channels = info.get("modality") or info.get("channel_names") or {}
    if isinstance(channels, dict) and channels:
        return normalise_modality(str(channels.get("0", next(iter(channels.values())))))
    return "unknown"


@register("nifti")
class NiftiSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[tuple[str, str | None, str]]:
        check_window_option(options)
        if int_option(options, "axis", 2) not in (0, 1, 2):
            raise OptionError(f"option axis={options['axis']}: expected 0, 1 or 2")
        if _is_nifti(path):
            return [(path.name, None, "")]
        if not path.is_dir():
            raise FileNotFoundError(f"nifti source {path} is neither a .nii/.nii.gz file nor a folder")
        items: list[tuple[str, str | None, str]] = []
        image_dirs = [d for d in _IMAGE_DIRS if (path / d).is_dir()]
        for name in image_dirs:
            label_dir = path / _LABEL_DIRS[name]
            for image in sorted(filter(_is_nifti, (path / name).iterdir())):
                label = _find_label(image, label_dir) if label_dir.is_dir() else None
                items.append(
                    (
                        str(image.relative_to(path)),
                        str(label.relative_to(path)) if label else None,
                        _SPLIT_OF_DIR.get(name, ""),
                    )
                )
        if not image_dirs:
            items = _structure_folder_items(path) or [(p.name, None, "") for p in sorted(filter(_is_nifti, path.iterdir()))]
        volume_option(options)  # fail early on a malformed volume option
        return limit_items(items, options)

    @staticmethod
    def load(path: Path, item: tuple[str, str | None, str], options: dict[str, str]) -> list[Record | Reject]:
        image_rel, label_rel, split = item
        root = path.parent if _is_nifti(path) else path
        image_file = root / image_rel
        opts = {**options, "modality": _modality(root, options)}
        if split and "split" not in options:
            opts["split"] = split
        fields = record_fields(path, opts, default_name=_dataset_json(root).get("name") or None)
        axis = int_option(options, "axis", 2)
        if axis not in (0, 1, 2):
            raise OptionError(f"option axis={axis}: expected 0, 1 or 2")
        try:
            volume = load_nifti(image_file)
            display, windowing = volume_to_uint8(volume, window=options.get("window"), modality=fields["modality"])
            if label_rel and (root / label_rel).is_dir():
                labels, names, notes = _combine_structure_masks(root / label_rel, volume.shape)
            else:
                labels = load_nifti(root / label_rel, integer=True) if label_rel else None
                names, notes = None, []
        except ImageReadError as err:
            return [reject(err.path, fields["source"], err.reason)]
        except ValueError as err:  # unknown window preset
            raise OptionError(str(err)) from None
        meta = {"volume": str(image_file), "axis": axis, "windowing": windowing, "volume_shape": list(volume.shape)}
        if labels is None:
            return _unlabelled(display, image_file, fields, axis, options, meta)
        if labels.shape != volume.shape:
            return [
                reject(
                    root / label_rel, fields["source"], f"label map shape {labels.shape} != image shape {volume.shape}"
                )
            ]
        label_map = names if names is not None else _label_map(root, options)
        areas = _label_areas(labels, axis)
        unknown = sorted(set(areas.present) - set(label_map) - {0})
        if unknown:
            return [
                reject(
                    root / label_rel,
                    fields["source"],
                    f"label map has id(s) {unknown} not named in the label map {label_map}",
                )
            ]
        out = [reject(root / label_rel, fields["source"], note) for note in notes]
        count = volume_option(options)
        if count and bool_option(options, "volume_only", False):  # the slice sequence alone (no 2-D records)
            return out + _volume(display, labels, areas, label_map, image_file, fields, axis, count, meta)
        out += _labelled(display, labels, areas, label_map, image_file, fields, axis, options, meta)
        if count:
            out += _volume(display, labels, areas, label_map, image_file, fields, axis, count, meta)
        return out


def _volume(display, labels, areas, label_map, image_file, fields, axis, count, meta) -> list[Record | Reject]:
    ids = [i for i in areas.ids if i in label_map]
    per_structure = {label_map[i]: areas.counts[:, areas.ids.index(i)] for i in ids}
    return volume_records(
        lambda k: volume_slice(display, axis, k),
        lambda name, k: volume_slice(labels, axis, k) == next(i for i in ids if label_map[i] == name),
        per_structure, count, str(image_file), fields, {**meta, "label_set": sorted(set(label_map.values()))},
    )


def _structure_folder_items(path: Path) -> list[tuple[str, str | None, str]]:
    """TotalSegmentator layout: case folders each with one volume and a ``segmentations/`` folder."""
    splits = _meta_csv_splits(path)
    items = []
    for case in sorted(p for p in path.iterdir() if p.is_dir() and (p / "segmentations").is_dir()):
        volumes = sorted(filter(_is_nifti, case.iterdir()))
        if len(volumes) == 1:
            items.append((str(volumes[0].relative_to(path)), str((case / "segmentations").relative_to(path)),
                          splits.get(case.name, "")))
        else:  # not silently lost: the load reports it
            items.append((str(case.relative_to(path)), None, ""))
    return items


def _meta_csv_splits(path: Path) -> dict[str, str]:
    import csv

    meta = path / "meta.csv"
    if not meta.is_file():
        return {}
    with open(meta, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    return {r["image_id"].strip(): r["split"].strip() for r in rows if r.get("image_id") and r.get("split")}


def _combine_structure_masks(folder: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, dict[int, str], list[str]]:
    """One label map from one binary mask per structure (ids by sorted name); notes on empty/overlapping masks."""
    files = sorted(filter(_is_nifti, folder.iterdir()), key=_case_name)
    if not files:
        raise ImageReadError(folder, "segmentations folder holds no .nii/.nii.gz mask")
    dtype = np.uint8 if len(files) < 255 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    names: dict[int, str] = {}
    overlaps = []
    for number, file in enumerate(files, 1):
        mask = load_nifti(file, integer=True)
        if mask.shape != shape:
            raise ImageReadError(file, f"mask shape {mask.shape} != image shape {shape}")
        mask = mask > 0
        if not mask.any():
            continue
        clash = int(np.count_nonzero(mask & (labels > 0)))
        if clash:
            overlaps.append(f"{clash} voxel(s) of {_case_name(file)} also belong to an earlier structure "
                            f"(kept as {_case_name(file)})")
        labels[mask] = number
        names[number] = _case_name(file)
    if not names:
        raise ImageReadError(folder, f"all {len(files)} structure masks are empty")
    return labels, names, overlaps


def _unlabelled(
    display: np.ndarray, image_file: Path, fields: dict, axis: int, options: dict[str, str], meta: dict
) -> list[Record | Reject]:
    count = display.shape[axis]
    wanted = max(1, int_option(options, "max_slices", 16))
    indices = sorted(set(np.linspace(0, count - 1, num=min(count, wanted)).round().astype(int).tolist()))
    return [
        make_record(
            volume_slice(display, axis, i),
            f"{image_file}#axis{axis}={i}",
            fields,
            "perception",
            meta={**meta, "slice": i},
        )
        for i in indices
    ]


def _labelled(
    display: np.ndarray,
    labels: np.ndarray,
    areas: _LabelAreas,
    label_map: dict[int, str],
    image_file: Path,
    fields: dict,
    axis: int,
    options: dict[str, str],
    meta: dict,
) -> list[Record | Reject]:
    plane_pixels = int(np.prod([s for i, s in enumerate(labels.shape) if i != axis]))
    min_area = int_option(options, "min_area", max(10, round(0.001 * plane_pixels)))
    empty_every = int_option(options, "empty_every", 0)
    label_set = sorted(set(label_map.values()))
    out: list[Record | Reject] = []
    empty: list[int] = []
    seen_empty = 0
    for index in range(labels.shape[axis]):
        ref = f"{image_file}#axis{axis}={index}"
        facts, small = _slice_facts(labels, axis, index, areas, label_map, min_area)
        if not facts:
            if small:
                out.append(reject(ref, fields["source"], f"foreground below min_area={min_area} px ({small})"))
                continue
            seen_empty += 1
            if empty_every > 0 and seen_empty % empty_every == 1 % empty_every:  # 1st, (N+1)th, ...
                out.append(
                    make_record(
                        volume_slice(display, axis, index),
                        ref,
                        fields,
                        "segmentation",
                        label_set=label_set,
                        meta={**meta, "slice": index, "negative": True},
                    )
                )
            else:
                empty.append(index)
            continue
        out.append(
            make_record(
                volume_slice(display, axis, index),
                ref,
                fields,
                "segmentation",
                labels=sorted({f.label for f in facts}),
                label_set=label_set,
                boxes=[f.box for f in facts],
                mask_facts=facts,
                meta={**meta, "slice": index, **({"dropped_small": small} if small else {})},
            )
        )
    if empty:
        out.append(
            reject(
                f"{image_file}#axis{axis}={_ranges(empty)}",
                fields["source"],
                f"{len(empty)} slice(s) without foreground skipped (SA-Med2D recipe keeps labelled slices)",
            )
        )
    return out


class _LabelAreas:
    """Pixel count of every label id in every slice along one axis, counted once per volume.

    Counting once per volume replaces a ``np.unique`` per slice (and one over the whole volume for
    the unknown-id check): slices without foreground then cost nothing further.
    """

    def __init__(self, ids: list[int], counts: np.ndarray) -> None:
        self.ids = ids  # label ids, ascending
        self.counts = counts  # (slices, len(ids)) pixel counts
        self.present = [v for v, n in zip(ids, counts.sum(axis=0).tolist(), strict=True) if n > 0]

    def in_slice(self, index: int) -> list[tuple[int, int]]:
        """(label id, pixel count) of the non-background ids present in slice ``index``, ascending."""
        row = self.counts[index]
        return [(self.ids[k], int(row[k])) for k in np.flatnonzero(row).tolist() if self.ids[k] != 0]


def _label_areas(labels: np.ndarray, axis: int) -> _LabelAreas:
    slices = labels.shape[axis]
    others = tuple(i for i in range(labels.ndim) if i != axis)
    lowest, highest = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    if lowest < 0 or highest >= 1 << 16:  # odd ids (negative, huge): renumber, then one bincount per slice
        ids, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.reshape(labels.shape)
        counts = np.stack([np.bincount(_plane(inverse, axis, i).ravel(), minlength=len(ids)) for i in range(slices)])
        return _LabelAreas([int(v) for v in ids], counts)
    counts = np.zeros((slices, highest + 1), np.int64)
    if highest <= 16:  # few ids (the usual case): one vectorised count per id over the whole volume
        for k in range(1, highest + 1):
            counts[:, k] = np.add.reduce((labels == k).view(np.uint8), axis=others, dtype=np.int64)
    else:  # many ids (whole-body atlases): one bincount per slice
        small = labels.astype(np.int64) if labels.dtype == np.uint64 else labels  # bincount refuses uint64
        for i in range(slices):
            counts[i] = np.bincount(_plane(small, axis, i).ravel(), minlength=highest + 1)
    counts[:, 0] = np.prod([labels.shape[i] for i in others]) - counts[:, 1:].sum(axis=1)
    return _LabelAreas(list(range(highest + 1)), counts)


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    where: list[int | slice] = [slice(None)] * volume.ndim
    where[axis] = index
    return volume[tuple(where)]


def _slice_facts(
    labels: np.ndarray, axis: int, index: int, areas: _LabelAreas, label_map: dict[int, str], min_area: int
) -> tuple[list, str]:
    present = areas.in_slice(index)
    if not present:
        return [], ""
    facts, small = [], []
    mask = volume_slice(labels, axis, index) if any(area >= min_area for _, area in present) else None
    for value, area in present:
        if area < min_area:
            small.append(f"{label_map[value]}: {area} px")
            continue
        fact = facts_for_label(mask == value, label_map[value])
        if fact is not None:
            facts.append(fact)
    return facts, ", ".join(small)


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    parts, start = [], indices[0]
    for prev, cur in zip(indices, indices[1:] + [None], strict=True):
        if cur != prev + 1:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = cur
    return ",".join(parts)
