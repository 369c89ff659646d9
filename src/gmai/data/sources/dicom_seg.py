"""``dicom-seg``: DICOM Segmentation objects (read with highdicom) next to the series they annotate.

The source is a folder holding one or more image series and SEG files (any depth, as archives such as
TCIA's ship them). Each SEG is matched to its referenced series by SeriesInstanceUID and to the series'
slices by SOPInstanceUID, inside the folder; its segments become structures named by their
SegmentLabel as de-identification leaves it (anatomy and lesion words, else ``structure <number>``), and
each slice with foreground becomes a segmentation record with mask facts (boxes, areas, locations), as
the ``nifti`` source does. Everything is read de-identified; refs are keyed hashes, never file names.

FRACTIONAL segments (probabilities or occupancies) count a voxel from one half on.

Rejected with the reason: a SEG whose referenced series is not in the folder, a segment whose mask is
empty, a SEG highdicom cannot read. Options: ``window`` (CT preset / ``file`` / ``percentile``),
``min_area`` (pixels), ``volume=slices:N`` (also N-slice volume samples), and the common ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmai.data.imaging import ImageReadError
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import reject
from gmai.data.sources._dicom_series import annotation_items, load_annotated


@register("dicom-seg")
class DicomSegSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[str]:
        return annotation_items(path, "SEG", options)

    @staticmethod
    def load(path: Path, item: str, options: dict[str, str]) -> list[Record | Reject]:
        return load_annotated(path, item, options, "SEG", _parse, _segment_masks)


def _parse(ds, file: Path) -> tuple[object, str]:
    import highdicom as hd

    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as err:  # noqa: BLE001 (highdicom raises several types for malformed SEGs)
        raise ImageReadError(file, f"not a readable DICOM SEG ({type(err).__name__}: {err})") from None
    return seg, _referenced_series(seg, file)


def _referenced_series(seg, file: Path) -> str:
    uids = {series for _, series, _ in seg.get_source_image_uids()}
    if len(uids) != 1:
        raise ImageReadError(file, f"SEG references {len(uids)} series; one is expected")
    return uids.pop()


def _segment_masks(seg, series, ref: str, source: str) -> tuple[dict[str, np.ndarray], list[Reject]]:
    """{segment label: bool (slices, rows, cols)} on the series' slice order; empty segments are rejects."""
    slices = [str(h.SOPInstanceUID) for h in series.headers]
    referenced = {sop for _, _, sop in seg.get_source_image_uids()}
    missing = sorted(referenced - set(slices))
    if missing:
        return {}, [reject(ref, source, f"references {len(missing)} image(s) not in series (e.g. {missing[0]})")]
    present = [i for i, sop in enumerate(slices) if sop in referenced]
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[slices[i] for i in present], segment_numbers=numbers, combine_segments=False
    )
    masks: dict[str, np.ndarray] = {}
    rejects: list[Reject] = []
    rows, cols = series.frames.shape[1:]
    # FRACTIONAL segments hold probabilities/occupancies (highdicom rescales them to 0-1): a voxel belongs to the
    # structure from one half on; BINARY and LABELMAP ones are 0/1 per segment
    cut = 0.5 if str(seg.get("SegmentationType", "")).upper() == "FRACTIONAL" else 1e-9
    if pixels.shape[1:3] != (rows, cols):
        return {}, [reject(ref, source, f"segment frames are {pixels.shape[1:3]}, the series is {(rows, cols)}")]
    for k, segment in enumerate(seg.SegmentSequence):
        name = str(segment.SegmentLabel).strip() or f"segment {segment.SegmentNumber}"
        volume = np.zeros(series.frames.shape, dtype=bool)
        volume[present] = pixels[..., k] >= cut
        if not volume.any():
            rejects.append(reject(f"{ref}#segment={segment.SegmentNumber}", source,
                                  f"segment {segment.SegmentNumber} {name!r} has an empty mask"))
            continue
        masks[name] = masks[name] | volume if name in masks else volume
    return masks, rejects
