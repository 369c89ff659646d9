"""``rtstruct``: RT Structure Sets (contours, rasterised with rt-utils) next to the series they annotate.

The source is a folder holding one or more image series and RTSTRUCT files. Each RTSTRUCT is matched
to its referenced series by SeriesInstanceUID (RTReferencedSeriesSequence) inside the folder; each ROI's
contours are rasterised onto that series' pixel grid (rt-utils, which fills the polygons slice by
slice), named by ROIName (as de-identification leaves it: anatomy and lesion words, else
``structure <number>``), and turned into the same segmentation records as ``dicom-seg``. Everything is
read de-identified.

Rejected with the reason: an RTSTRUCT whose referenced series is not in the folder; an ROI with a
contour point outside the image grid (more than half a pixel) or on an image not in the series; an ROI
whose mask is empty. Options: as ``dicom-seg``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gmai.data.imaging import ImageReadError
from gmai.data.records import Record, Reject
from gmai.data.sources import register
from gmai.data.sources._common import reject
from gmai.data.sources._dicom_series import annotation_items, load_annotated


@register("rtstruct")
class RtStructSource:
    @staticmethod
    def items(path: Path, options: dict[str, str]) -> list[str]:
        return annotation_items(path, "RTSTRUCT", options)

    @staticmethod
    def load(path: Path, item: str, options: dict[str, str]) -> list[Record | Reject]:
        return load_annotated(path, item, options, "RTSTRUCT", lambda ds, file: (ds, _referenced_series(ds, file)),
                              _roi_masks)


def _referenced_series(ds: Any, file: Path) -> str:
    uids = {
        str(series.SeriesInstanceUID)
        for frame in ds.get("ReferencedFrameOfReferenceSequence", [])
        for study in frame.get("RTReferencedStudySequence", [])
        for series in study.get("RTReferencedSeriesSequence", [])
    }
    if len(uids) != 1:
        raise ImageReadError(file, f"RTSTRUCT references {len(uids)} series (RTReferencedSeriesSequence); one is expected")
    return uids.pop()


def _roi_masks(ds: Any, series, ref: str, source: str) -> tuple[dict[str, np.ndarray], list[Reject]]:
    """{ROIName: bool (slices, rows, cols)}; ROIs with a contour off the grid or an empty mask are rejects."""
    from rt_utils.rtstruct import RTStruct

    structure = RTStruct(series.headers, ds)
    masks: dict[str, np.ndarray] = {}
    rejects: list[Reject] = []
    for roi in ds.get("StructureSetROISequence", []):
        name = str(roi.ROIName).strip() or f"ROI {roi.ROINumber}"
        where = f"{ref}#roi={roi.ROINumber}"
        problem = _contour_problem(ds, series, int(roi.ROINumber))
        if problem:
            rejects.append(reject(where, source, f"ROI {name!r}: {problem}"))
            continue
        # rt-utils gives (rows, cols, slices) in ascending slice position, the order of series.headers
        volume = np.transpose(structure.get_roi_mask_by_name(roi.ROIName), (2, 0, 1)).astype(bool)
        if not volume.any():
            rejects.append(reject(where, source, f"ROI {name!r} has an empty mask"))
            continue
        masks[name] = masks[name] | volume if name in masks else volume
    return masks, rejects


def _contour_problem(ds: Any, series, number: int) -> str:
    """Why an ROI's contours cannot be rasterised faithfully ('' when they can): rt-utils would clip a
    polygon that leaves the grid, and skip one drawn on an image of another series, without a word."""
    from rt_utils import image_helper

    to_pixels = image_helper.get_patient_to_pixel_transformation_matrix(series.headers)
    slices = {str(h.SOPInstanceUID) for h in series.headers}
    rows, cols = series.frames.shape[1:]
    contours = [c for roi in ds.get("ROIContourSequence", []) if int(roi.ReferencedROINumber) == number
                for c in roi.get("ContourSequence", [])]
    for contour in contours:
        images = {str(i.ReferencedSOPInstanceUID) for i in contour.get("ContourImageSequence", [])}
        if not images:
            return "contour without ContourImageSequence (contours are placed by the image they reference)"
        if not images <= slices:
            return "contour on an image that is not in the referenced series"
        points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
        pixels = image_helper.apply_transformation_to_3d_points(points, to_pixels)
        x, y = pixels[:, 0], pixels[:, 1]
        if x.min() < -0.5 or y.min() < -0.5 or x.max() > cols - 0.5 or y.max() > rows - 0.5:
            worst = pixels[np.argmax(np.maximum.reduce([-x, -y, x - cols, y - rows]))]
            return (f"contour point at pixel ({worst[0]:.1f}, {worst[1]:.1f}) is outside the {cols}x{rows} "
                    "image grid")
    return ""
