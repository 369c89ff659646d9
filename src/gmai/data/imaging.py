"""Every pixel-level operation on medical images, in one place.

Nothing else in the project opens a DICOM or NIfTI file. This module reads DICOM (rescale,
windowing, MONOCHROME1, palette colour, multi-frame), de-identifies DICOM headers (PS3.15 basic
profile, see :func:`deidentify`), reads NIfTI volumes and slices them, normalises intensities to
8-bit for display, and reads ordinary image files. Bad input raises :class:`ImageReadError` whose
message names the file and the reason; source adapters turn that into a ``Reject``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# CT display windows as (centre/level, width) in Hounsfield units: the usual radiology presets.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
# Intensity normalisation for modalities without a physical unit (MR, most others).
MR_PERCENTILES = (0.5, 99.5)


class ImageReadError(Exception):
    """An input that cannot become an image. ``str(err)`` names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


# --------------------------------------------------------------------------------------------
# Intensity helpers
# --------------------------------------------------------------------------------------------


def window_preset(name: str) -> tuple[float, float]:
    """(centre, width) of a named CT window; accepts ``soft_tissue``/``softtissue`` spellings."""
    key = name.strip().lower().replace("_", "-")
    if key in ("softtissue", "soft", "abdomen"):
        key = "soft-tissue"
    if key not in WINDOW_PRESETS:
        raise ValueError(f"unknown window preset {name!r}; known: {', '.join(WINDOW_PRESETS)}")
    return WINDOW_PRESETS[key]


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window (DICOM PS3.3 C.11.2.1.2 without the half-pixel offsets) to uint8."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return _linear_to_uint8(values, center - width / 2.0, width)


def normalize_percentile(
    values: np.ndarray, low: float = MR_PERCENTILES[0], high: float = MR_PERCENTILES[1]
) -> np.ndarray:
    """Clip to the [low, high] percentiles and stretch to uint8 (the usual MR normalisation)."""
    lo, hi = np.percentile(values.astype(np.float64), [low, high])
    return rescale_to_uint8(values, float(lo), float(hi))


def rescale_to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:  # a constant image: keep it constant (quality control decides if it is blank)
        return np.zeros(values.shape, dtype=np.uint8)
    return _linear_to_uint8(values, lo, hi - lo)


_BLOCK = 1 << 15  # float64 values per block: 256 KiB, stays in a core's cache


def _linear_to_uint8(values: np.ndarray, low: float, width: float) -> np.ndarray:
    """``uint8(clip((values - low) / width, 0, 1) * 255 + 0.5)`` computed in float64.

    A whole CT volume (~10^6-10^7 voxels) is done block by block in one reused float64 buffer:
    the same operations in the same order on the same values (so the same bytes) as the
    whole-array expression, without its five full-size float64 temporaries (~2x less CPU time).
    """
    layout = "C" if values.flags.c_contiguous else "F" if values.flags.f_contiguous else ""
    if values.size <= _BLOCK or not layout or values.dtype.kind not in "iuf":
        scaled = (values.astype(np.float64) - low) / width
        return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out = np.empty(values.shape, np.uint8, order=layout)  # the layout astype would give
    flat_in, flat_out = values.reshape(-1, order=layout), out.reshape(-1, order=layout)  # views
    buffer = np.empty(_BLOCK, np.float64)
    for start in range(0, flat_in.size, _BLOCK):
        part = flat_in[start:start + _BLOCK]
        scaled = buffer[:part.size]
        np.subtract(part, low, out=scaled, dtype=np.float64)  # the input converted to float64 first, as astype
        np.divide(scaled, width, out=scaled)
        np.clip(scaled, 0.0, 1.0, out=scaled)
        np.multiply(scaled, 255.0, out=scaled)
        np.add(scaled, 0.5, out=scaled)
        flat_out[start:start + part.size] = scaled  # float64 -> uint8 by truncation, as astype(np.uint8)
    return out


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max stretch to uint8; uint8 input is returned unchanged."""
    if values.dtype == np.uint8:
        return values
    return rescale_to_uint8(values, float(np.min(values)), float(np.max(values)))


def pad_to_square(image: np.ndarray, fill: int = 0) -> np.ndarray:
    """Pad (never crop) a 2-D or HxWxC image to a centred square, as GMAI-VL does before resizing."""
    h, w = image.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = [(top, side - h - top), (left, side - w - left)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode="constant", constant_values=fill)


# --------------------------------------------------------------------------------------------
# Ordinary image files (PNG, JPEG, TIFF, ...)
# --------------------------------------------------------------------------------------------


def read_image(path: str | Path) -> np.ndarray:
    """A PNG/JPEG/... file as uint8: HxW for grayscale, HxWx3 for colour (alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # force decoding now so a truncated file fails here, not later
            if im.mode in ("L", "1", "P") and _palette_is_gray(im):
                arr = np.asarray(im.convert("L"))
            elif im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = to_uint8(np.asarray(im).astype(np.float64))
            elif im.mode == "LA":
                arr = np.asarray(im.convert("L"))
            else:
                arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not a readable image file") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL reports truncation as OSError
        raise ImageReadError(path, f"unreadable or truncated image ({err})") from None
    if arr.size == 0:
        raise ImageReadError(path, "image has no pixels")
    return np.ascontiguousarray(arr)


def _palette_is_gray(im: Any) -> bool:
    if im.mode != "P":
        return True
    rgb = np.asarray(im.convert("RGB"))
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def read_label_image(path: str | Path) -> np.ndarray:
    """A segmentation mask file as an integer HxW array of label ids (no colour conversion)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA"):
                arr = np.asarray(im.convert("RGB"))
                if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])):
                    raise ImageReadError(path, "colour mask: expected one integer label id per pixel")
                arr = arr[..., 0]
            elif im.mode == "LA":
                arr = np.asarray(im)[..., 0]
            else:  # L, P (palette index = label id), I, I;16, 1
                arr = np.asarray(im)
    except FileNotFoundError:
        raise ImageReadError(path, "mask file not found") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "mask is not a readable image file") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(path, f"unreadable or truncated mask ({err})") from None
    return np.ascontiguousarray(arr.astype(np.int64))


def save_png(image: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG", optimize=False)


# --------------------------------------------------------------------------------------------
# DICOM reading
# --------------------------------------------------------------------------------------------

# Map DICOM Modality codes to the modality words used across the project.
DICOM_MODALITIES = {
    "CT": "CT",
    "MR": "MR",
    "PT": "PET",
    "NM": "nuclear medicine",
    "US": "ultrasound",
    "CR": "X-ray",
    "DX": "X-ray",
    "DR": "X-ray",
    "RG": "X-ray",
    "XA": "X-ray angiography",
    "RF": "fluoroscopy",
    "MG": "mammography",
    "OCT": "OCT",
    "OP": "fundus",
    "ES": "endoscopy",
    "SM": "pathology",
    "GM": "microscopy",
    "XC": "photograph",
}
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "ECG", "KO", "PR", "REG", "DOC"}


@dataclass
class DicomImage:
    """Decoded, display-ready DICOM pixels plus a header summary that identifies nobody."""

    frames: list[np.ndarray]  # each HxW or HxWx3 uint8
    summary: dict[str, Any]
    windowing: str  # how intensities were mapped to 8-bit, for manifests
    notes: list[str] = field(default_factory=list)

    @property
    def modality(self) -> str:
        code = str(self.summary.get("modality", ""))
        return DICOM_MODALITIES.get(code, code or "unknown")


def read_dicom_dataset(path: str | Path, *, deidentify_header: bool = True, pixels: bool = True) -> Any:
    """Read a DICOM file with pydicom, de-identified by default.

    ``pixels=False`` stops before the pixel data (a cheap header-only read, e.g. to check the
    size of an upload before decoding it).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except InvalidDicomError as err:
        raise ImageReadError(path, f"not a DICOM file ({err})") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise ImageReadError(path, f"unreadable or truncated DICOM ({type(err).__name__}: {err})") from None
    if deidentify_header:
        deidentify(ds)
    return ds


def read_dicom(path: str | Path, *, window: str | None = None, allow_burned_in: bool = False) -> DicomImage:
    """Decode a DICOM image file into display-ready uint8 frames.

    Steps: reject non-image objects and burned-in annotations (unless allowed); decode pixels
    (truncated data -> error); palette colour -> RGB; modality LUT (rescale slope/intercept);
    window from ``window`` (a preset name, ``"file"``, ``"percentile"``) or by default the file's
    own Window Center/Width, else a CT soft-tissue preset for CT, else 0.5-99.5 percentiles;
    MONOCHROME1 inverted so that high values are always bright. Multi-frame files give one frame
    each. The header is de-identified before anything else reads it.
    """
    ds = read_dicom_dataset(path)
    modality = str(ds.get("Modality", "") or "")
    if modality in NON_IMAGE_MODALITIES:
        raise ImageReadError(path, f"DICOM {modality} object is not an image")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(path, "DICOM file has no pixel data")
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES" and not allow_burned_in:
        raise ImageReadError(path, "BurnedInAnnotation=YES: text burned into the pixels may identify the patient")
    pixels = _decode_pixels(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    frames, windowing = _to_display_frames(ds, pixels, photometric, nframes, window, path)
    notes = []
    if burned == "YES":
        notes.append("burned-in annotation allowed by option")
    return DicomImage(frames=frames, summary=safe_header_summary(ds), windowing=windowing, notes=notes)


def _decode_pixels(ds: Any, path: str | Path) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as err:  # pydicom raises many types for short/corrupt pixel data  # noqa: BLE001
        raise ImageReadError(
            path, f"cannot decode pixel data, truncated or unsupported ({type(err).__name__}: {err})"
        ) from None
    if arr.size == 0:
        raise ImageReadError(path, "DICOM pixel data is empty")
    return arr


def _to_display_frames(
    ds: Any, pixels: np.ndarray, photometric: str, nframes: int, window: str | None, path: str | Path
) -> tuple[list[np.ndarray], str]:
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        rgb = (rgb >> 8).astype(np.uint8) if rgb.dtype != np.uint8 else rgb  # 16-bit LUT entries
        stack = rgb if nframes > 1 else rgb[None]
        return [np.ascontiguousarray(f) for f in stack], "palette"
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420"):
        # pydicom converts YCbCr to RGB while decoding; deeper samples are stretched to 8 bits
        stack = pixels if nframes > 1 else pixels[None]
        return [np.ascontiguousarray(to_uint8(f)) for f in stack], "rgb"
    if not photometric.startswith("MONOCHROME"):
        raise ImageReadError(path, f"unsupported PhotometricInterpretation {photometric!r}")
    values = apply_modality_lut(pixels, ds).astype(np.float64)  # rescale slope/intercept -> e.g. HU
    stack = values if nframes > 1 else values[None]
    center_width, how = _choose_window(ds, stack, window)
    if center_width is None:
        frames = [normalize_percentile(f) for f in stack]
    else:
        frames = [apply_window(f, *center_width) for f in stack]
    if photometric == "MONOCHROME1":  # MONOCHROME1: low values are white; invert for display
        frames = [255 - f for f in frames]
        how += ", MONOCHROME1 inverted"
    return frames, how


def _choose_window(ds: Any, stack: np.ndarray, window: str | None) -> tuple[tuple[float, float] | None, str]:
    choice = (window or "auto").strip().lower()
    if choice in ("percentile", "mr"):
        return None, "percentile 0.5-99.5"
    if choice not in ("auto", "file"):
        center, width = window_preset(choice)
        return (center, width), f"preset {choice} (L{center:g}/W{width:g})"
    file_window = _file_window(ds)
    if file_window is not None:
        return file_window, f"file window (L{file_window[0]:g}/W{file_window[1]:g})"
    if str(ds.get("Modality", "")) == "CT":
        center, width = WINDOW_PRESETS["soft-tissue"]
        return (center, width), "preset soft-tissue (L40/W400)"
    return None, "percentile 0.5-99.5"


def _file_window(ds: Any) -> tuple[float, float] | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:  # multi-valued windows: the first one is the primary display
        c = float(center[0] if _is_multi(center) else center)
        w = float(width[0] if _is_multi(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (c, w) if w > 1 else None


def _is_multi(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, (str, bytes)) and len(value) > 0


# --------------------------------------------------------------------------------------------
# DICOM de-identification (PS3.15 Annex E basic application level confidentiality profile)
# --------------------------------------------------------------------------------------------

# Attributes removed outright (action X, or Z/D where an empty value would add nothing).
# This follows the basic profile's table for the attributes found in ordinary image headers.
_REMOVE_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientReligiousPreference",
    "PatientComments",
    "EthnicGroup",
    "Occupation",
    "MilitaryRank",
    "BranchOfService",
    "MedicalRecordLocator",
    "AdditionalPatientHistory",
    "PatientState",
    "PregnancyStatus",
    "SmokingStatus",
    "MedicalAlerts",
    "Allergies",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientInsurancePlanCodeSequence",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "PatientSexNeutered",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "InstitutionCodeSequence",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "OperatorsName",
    "OperatorIdentificationSequence",
    "RequestingPhysician",
    "RequestingService",
    "ScheduledPerformingPhysicianName",
    "StationName",
    "DeviceSerialNumber",
    "PlateID",
    "DetectorID",
    "GantryID",
    "CassetteID",
    "StudyDescription",
    "SeriesDescription",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "ScheduledProcedureStepDescription",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "RequestAttributesSequence",
    "ReasonForStudy",
    "RequestedProcedureComments",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "AdmissionID",
    "DerivationDescription",
    "ImageComments",
    "ProtocolName",
    "AcquisitionComments",
    "TextComments",
    "TextString",
    "FrameComments",
    "ContentCreatorName",
    "VerifyingObserverName",
    "PersonName",
    "PersonAddress",
    "PersonTelephoneNumbers",
    "CurrentPatientLocation",
    "PatientInstitutionResidence",
    "ServiceEpisodeID",
    "ServiceEpisodeDescription",
    "VisitComments",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence",
    "OriginalAttributesSequence",
    "ModifiedAttributesSequence",
    "ContributingEquipmentSequence",
    "DigitalSignaturesSequence",
    "ConsultingPhysicianName",
    "InterpretationRecorder",
    "InterpretationTranscriber",
    "InterpretationAuthor",
    "DistributionName",
    "DistributionAddress",
    "Overlays",
    "IconImageSequence",
    "AcquisitionDeviceProcessingDescription",
    "PerformedStationName",
    "PerformedLocation",
    "PerformedStationAETitle",
    "ScheduledStationName",
    "ScheduledStationAETitle",
    "OrderEnteredBy",
    "OrderEntererLocation",
    "OrderCallbackPhoneNumber",
    "StudyComments",
    "ReasonForTheRequestedProcedure",
    "RequestedContrastAgent",
    "DischargeDiagnosisDescription",
    "PatientTransportArrangements",
    "ReferencedPatientAliasSequence",
    "PatientPrimaryLanguageCodeSequence",
    "InstitutionalDepartmentTypeCodeSequence",
    "DeviceDescription",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
    "AcquisitionContextSequence",
    "ContentSequence",
)
# UIDs: every UID value is replaced by a deterministic hash (so a series still groups after
# de-id), except SOP class / transfer syntax UIDs and any UID defined by the DICOM standard itself
# (root 1.2.840.10008.), which name kinds of objects, not patients or studies.
_STANDARD_UID_ROOT = "1.2.840.10008."


def _is_instance_uid(keyword: str, value: str) -> bool:
    return not (
        keyword.endswith("ClassUID") or keyword.endswith("TransferSyntaxUID") or value.startswith(_STANDARD_UID_ROOT)
    )


# Value representations that carry identity wherever they occur: all person names and all
# dates/times are removed (the basic profile's dates are Z/D/X; removing them is the strict form).
_IDENTIFYING_VRS = ("PN", "DA", "DT", "TM", "AE")  # AE: application entity titles name stations/sites
_DEID_SALT = "gmai-deid-v1"


def deidentify(ds: Any, *, salt: str = _DEID_SALT) -> Any:
    """De-identify a pydicom Dataset in place (and return it).

    Basic-profile attributes are removed; every person name, date and time anywhere (sequences
    included) is removed; every instance UID is replaced by a deterministic hash (same input UID
    -> same output UID, so a series stays one series; class and standard UIDs are kept); private
    tags, overlays and curves are removed. ``PatientIdentityRemoved=YES`` and ``DeidentificationMethod`` record it.
    Burned-in pixel text cannot be removed here: :func:`read_dicom` rejects such files.
    """
    from pydicom.dataset import Dataset

    def scrub(dataset: Dataset) -> None:
        dataset.remove_private_tags()
        for elem in list(dataset):
            keyword = elem.keyword
            if elem.tag.group in (0x6000, 0x6002, 0x6004, 0x5000, 0x5002):  # overlays, curves
                del dataset[elem.tag]
            elif keyword in _REMOVE_KEYWORDS or elem.VR in _IDENTIFYING_VRS:
                del dataset[elem.tag]
            elif elem.VR == "UI" and elem.value:
                if elem.VM > 1:
                    elem.value = [
                        _replacement_uid(str(v), salt) if _is_instance_uid(keyword, str(v)) else v for v in elem.value
                    ]
                elif _is_instance_uid(keyword, str(elem.value)):
                    elem.value = _replacement_uid(str(elem.value), salt)
            elif elem.VR == "SQ":
                for item in elem.value:
                    scrub(item)

    scrub(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = _replacement_uid(str(meta.MediaStorageSOPInstanceUID), salt)
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                    "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation"):
        if meta is not None and keyword in meta:
            delattr(meta, keyword)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "gmai PS3.15 basic profile v1"  # LO: at most 64 characters
    return ds


def _replacement_uid(uid: str, salt: str) -> str:
    # 2.25.<128-bit int> (PS3.5 B.2 UUID-derived form) from a SHA-256 of (salt, uid):
    # deterministic, and no digit of the original survives. (pydicom's generate_uid ignores
    # entropy sources when prefix=None, so it cannot be used for a stable mapping.)
    digest = hashlib.sha256(f"{salt}\0{uid}".encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


# Only these header fields may leave this module (captions, logs, manifests, UI).
_SAFE_FIELDS = {
    "Modality": "modality",
    "BodyPartExamined": "body_part",
    "Rows": "rows",
    "Columns": "columns",
    "NumberOfFrames": "frames",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "model",
    "SliceThickness": "slice_thickness_mm",
    "PixelSpacing": "pixel_spacing_mm",
    "PhotometricInterpretation": "photometric",
    "BitsStored": "bits_stored",
    "MagneticFieldStrength": "field_strength_t",
    "KVP": "kvp",
    "ViewPosition": "view_position",
    "ImageType": "image_type",
    "SeriesNumber": "series_number",
    "InstanceNumber": "instance_number",
    "ContrastBolusAgent": "contrast_agent",
    "ScanningSequence": "scanning_sequence",
}


def safe_header_summary(ds: Any) -> dict[str, Any]:
    """A whitelist of non-identifying header fields as plain JSON values (never names/IDs/dates)."""
    out: dict[str, Any] = {}
    for keyword, name in _SAFE_FIELDS.items():
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        out[name] = _plain(value)
    if "frames" not in out:
        out["frames"] = 1
    return out


def _plain(value: Any) -> Any:
    if _is_multi(value):
        return [_plain(v) for v in value]
    if isinstance(value, int):  # pydicom IS is an int subclass: return a plain int
        return int(value)
    if isinstance(value, str) and not isinstance(value, float):
        return value.strip()
    try:  # DSfloat and friends -> plain float (int when whole)
        number = float(value)
        return int(number) if number.is_integer() else number
    except (TypeError, ValueError):
        return str(value).strip()


# --------------------------------------------------------------------------------------------
# NIfTI
# --------------------------------------------------------------------------------------------


def load_nifti(path: str | Path, *, integer: bool = False) -> np.ndarray:
    """A NIfTI volume as a 3-D array reoriented to RAS+ (so axis 2 is always axial).

    ``integer=True`` for label maps: integer files keep their own integer type (uint8 label maps
stay 1 byte per voxel), float ones are rounded to int64. 4-D inputs keep their first volume.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except (ImageFileError, EOFError, OSError, ValueError, Exception) as err:  # noqa: BLE001 (zlib, gzip, ...)
        raise ImageReadError(path, f"unreadable or truncated NIfTI ({type(err).__name__}: {err})") from None
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageReadError(path, f"expected a 3-D volume, got shape {tuple(data.shape)}")
    if integer:  # label maps are usually stored as integers already: no float round trip then
        if data.dtype.kind in "iu":
            return np.asarray(data)
        return np.rint(data).astype(np.int64) if data.dtype.kind != "b" else data.astype(np.uint8)
    return data.astype(np.float32)


def nifti_shape(path: str | Path) -> tuple[int, ...]:
    """The volume shape from the header alone (cheap, no voxel decoding), after RAS reorientation."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        ornt = nib.orientations.io_orientation(img.affine)
    except Exception as err:  # noqa: BLE001
        raise ImageReadError(path, f"unreadable NIfTI header ({type(err).__name__}: {err})") from None
    shape = img.shape[:3]
    return tuple(int(shape[int(ax)]) for ax in np.argsort(ornt[:, 0]))


def volume_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One 2-D slice of a RAS+ volume, oriented for display.

    Display convention (radiological): for axial slices (axis 2) anterior is up and the
    patient's right is on the image's left; coronal (axis 1) superior up, patient's right on the
    left; sagittal (axis 0) superior up, anterior on the left. Image/mask pairs go through the
    same function, so mask facts (including left/right words, which describe the image as seen)
    stay consistent with the pixels.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    # Basic indexing is a view: np.take would first copy the whole (Fortran-ordered, as nibabel
    # returns it) volume into C order on every call, ~100x the cost of the slice itself.
    where: list[int | slice] = [slice(None)] * volume.ndim
    where[axis] = index
    plane = volume[tuple(where)]
    # axis 2: plane[x, y]; axis 1: plane[x, z]; axis 0: plane[y, z]. In every case the transpose
    # puts the second in-plane axis on rows and flipping both puts anterior/superior up and the
    # patient's right (or anterior, for sagittal) on the image's left.
    return np.ascontiguousarray(plane.T[::-1, ::-1])


def volume_to_uint8(volume: np.ndarray, *, window: str | None, modality: str) -> tuple[np.ndarray, str]:
    """Map a whole volume to uint8 once (consistent across its slices).

    ``window``: a CT preset name, ``"percentile"``/``"mr"``, or None for the default by modality
    (CT -> soft tissue; anything else -> 0.5-99.5 percentiles of the volume).
    """
    choice = (window or "").strip().lower()
    if choice in ("percentile", "mr") or (not choice and modality.upper() != "CT"):
        return normalize_percentile(volume), "percentile 0.5-99.5 over the volume"
    name = choice or "soft-tissue"
    center, width = window_preset(name)
    return apply_window(volume, center, width), f"preset {name} (L{center:g}/W{width:g})"


def file_digest(path: str | Path, length: int = 12) -> str:
    """A short content hash, used to name derived files without exposing input names."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


# --------------------------------------------------------------------------------------------
# DICOM writing (synthetic phantoms and de-identified exports)
# --------------------------------------------------------------------------------------------


def write_dicom(
    path: str | Path, pixels: np.ndarray, header: dict[str, Any], *, photometric: str = "MONOCHROME2"
) -> None:
    """Write a single-frame grayscale DICOM (explicit VR little endian) from integer pixels.

    ``pixels``: HxW uint8/uint16/int16 stored values; ``header``: keyword -> value (e.g.
    ``Modality``, ``RescaleIntercept``, ``PatientName``). SOP/Study/Series UIDs are generated
    when the header does not give them.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"write_dicom needs 2-D uint8/uint16/int16 pixels, got {pixels.dtype} {pixels.shape}")
    sop_class = CTImageStorage if header.get("Modality") == "CT" else SecondaryCaptureImageStorage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, key, header.get(key) or generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    for key, value in header.items():
        if key not in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
