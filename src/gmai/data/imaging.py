"""Every pixel-level operation on medical images, in one place.

Nothing else in the project opens a DICOM or NIfTI file. This module reads DICOM (rescale,
windowing, MONOCHROME1, palette colour, multi-frame), de-identifies DICOM headers (PS3.15 basic
profile, in :mod:`gmai.data.deid`), reads NIfTI volumes and slices them, normalises intensities to
8-bit for display, and reads ordinary image files. Bad input raises :class:`ImageReadError` whose
message names the file and the reason; source adapters turn that into a ``Reject``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmai.data.deid import burned_in_risk, deidentify, quiet_pydicom

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
        raise ImageReadError(path, f"unreadable or truncated image ({type(err).__name__})") from None
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
        raise ImageReadError(path, f"unreadable or truncated mask ({type(err).__name__})") from None
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
    """Read a DICOM file with pydicom, de-identified by default (:mod:`gmai.data.deid`).

    ``pixels=False`` stops before the pixel data (a cheap header-only read, e.g. to check the
    size of an upload before decoding it). Nothing read is printed (invalid values included), and an
    error names the file and the rule, never a value from the file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    with quiet_pydicom():
        try:
            try:
                ds = pydicom.dcmread(str(path), stop_before_pixels=not pixels)
            except InvalidDicomError:  # no preamble/DICM: old ACR-NEMA style files are still DICOM
                ds = pydicom.dcmread(str(path), stop_before_pixels=not pixels, force=True)
                if not any(k in ds for k in ("SOPClassUID", "Modality", "PixelData")):
                    raise InvalidDicomError("nothing DICOM-like in it") from None
        except FileNotFoundError:
            raise ImageReadError(path, "file not found") from None
        except InvalidDicomError:
            raise ImageReadError(path, "not a DICOM file (no DICM prefix and no recognisable header)") from None
        except Exception as err:  # noqa: BLE001  (a forced read of junk raises anything)
            raise ImageReadError(path, f"unreadable or truncated DICOM ({type(err).__name__})") from None
        if deidentify_header:
            try:
                deidentify(ds)
            except Exception as err:  # a header that cannot be cleaned is not used  # noqa: BLE001
                raise ImageReadError(path, f"header cannot be de-identified ({type(err).__name__})") from None
    return ds


BURNED_IN_MODES = ("reject", "ocr", "redact")


def read_dicom(path: str | Path, *, window: str | None = None, burned_in: str = "reject") -> DicomImage:
    """Decode a DICOM image file into display-ready uint8 frames.

    Steps: de-identify the header before anything else reads it; reject non-image objects; apply the
    burned-in text policy (``burned_in``): files at risk (:func:`gmai.data.deid.burned_in_risk`) are
    rejected by ``reject`` (the default), OCR-checked by ``ocr`` (rejected when a frame has legible
    text) or have the text boxes blacked out by ``redact``; decode pixels (truncated data -> error);
    palette colour -> RGB; modality LUT (rescale slope/intercept); window from ``window`` (a preset
    name, ``"file"``, ``"percentile"``) or by default the file's own Window Center/Width, else a CT
    soft-tissue preset for CT, else 0.5-99.5 percentiles; MONOCHROME1 inverted so that high values are
    always bright. Multi-frame files give one frame each.
    """
    if burned_in not in BURNED_IN_MODES:
        raise ValueError(f"burned_in={burned_in!r}: use one of {', '.join(BURNED_IN_MODES)}")
    ds = read_dicom_dataset(path)
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in NON_IMAGE_MODALITIES:
        raise ImageReadError(path, f"DICOM {modality} object is not an image")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(path, "DICOM file has no pixel data")
    with quiet_pydicom():
        risk = burned_in_risk(ds)
    if risk and burned_in == "reject":
        raise ImageReadError(path, f"burned-in text risk: {risk}")
    with quiet_pydicom():
        pixels = _decode_pixels(ds, path)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        frames, windowing = _to_display_frames(ds, pixels, photometric, nframes, window, path)
    notes = []
    if risk:
        frames = _check_burned_in_text(frames, burned_in, path)
        notes.append(f"burned-in text risk checked by OCR ({burned_in})")
    with quiet_pydicom():
        summary = safe_header_summary(ds)
    return DicomImage(frames=frames, summary=summary, windowing=windowing, notes=notes)


def find_text_boxes(frame: np.ndarray, min_confidence: float = 60.0) -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h) of words Tesseract reads in a frame (needs Debian's tesseract-ocr + pytesseract)."""
    import pytesseract
    from PIL import Image

    gray = frame if frame.ndim == 2 else frame.mean(axis=2).astype(np.uint8)
    data = pytesseract.image_to_data(Image.fromarray(gray), output_type=pytesseract.Output.DICT)
    boxes = []
    for text, conf, x, y, w, h in zip(data["text"], data["conf"], data["left"], data["top"], data["width"],
                                      data["height"], strict=True):
        if float(conf) >= min_confidence and sum(c.isalnum() for c in str(text)) >= 2:
            boxes.append((int(x), int(y), int(w), int(h)))
    return boxes


def _check_burned_in_text(frames: list[np.ndarray], mode: str, path: str | Path) -> list[np.ndarray]:
    try:
        import pytesseract

        pytesseract.get_tesseract_version()
    except Exception:  # noqa: BLE001  (ImportError, or the tesseract binary missing)
        raise ImageReadError(path, f"burned-in text risk, and burned_in={mode} needs tesseract-ocr and "
                                   "pytesseract, which are not installed") from None
    out = []
    for frame in frames:
        boxes = find_text_boxes(frame)
        if boxes and mode == "ocr":
            raise ImageReadError(path, "burned-in text found by OCR")
        cleaned = frame.copy()
        for x, y, w, h in boxes:  # redact: black out each word with a small margin
            cleaned[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2] = 0
        out.append(cleaned)
    return out


def _decode_pixels(ds: Any, path: str | Path) -> np.ndarray:
    try:
        arr = ds.pixel_array
    except Exception as err:  # pydicom raises many types for short/corrupt pixel data  # noqa: BLE001
        reason = f"cannot decode pixel data, truncated or unsupported ({type(err).__name__})"
        raise ImageReadError(path, reason) from None
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
        raise ImageReadError(path, "unsupported PhotometricInterpretation")
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


# Only these header fields may leave this module (captions, logs, manifests, UI).
# Only these header fields may leave this module (captions, logs, manifests, UI), and only as numbers or
# as words from a controlled vocabulary: a value outside it is dropped, never copied (free text such as
# BodyPartExamined, Manufacturer or ContrastBolusAgent can hold anything a person typed).
_NUMERIC_FIELDS = {
    "Rows": "rows",
    "Columns": "columns",
    "NumberOfFrames": "frames",
    "SliceThickness": "slice_thickness_mm",
    "PixelSpacing": "pixel_spacing_mm",
    "BitsStored": "bits_stored",
    "MagneticFieldStrength": "field_strength_t",
    "KVP": "kvp",
    "SeriesNumber": "series_number",
    "InstanceNumber": "instance_number",
}
# BodyPartExamined defined terms (PS3.16 Annex L, the common ones) -> the project's organ words
BODY_PARTS = {
    "ABDOMEN": "abdomen", "CHEST": "chest", "THORAX": "chest", "HEAD": "head", "BRAIN": "brain",
    "SKULL": "head", "EXTREMITY": "extremity", "PELVIS": "pelvis", "BREAST": "breast", "SPINE": "spine",
    "CSPINE": "spine", "TSPINE": "spine", "LSPINE": "spine", "NECK": "neck", "KNEE": "knee",
    "WHOLEBODY": "whole body", "WHOLE BODY": "whole body", "HEART": "heart", "LIVER": "liver",
    "HAND": "extremity", "FOOT": "extremity", "ANKLE": "extremity", "WRIST": "extremity",
    "ELBOW": "extremity", "SHOULDER": "shoulder", "HIP": "hip", "KIDNEY": "kidney", "LUNG": "chest",
    "ABDOMENPELVIS": "abdomen", "CHESTABDOMEN": "chest", "HEADNECK": "head", "EYE": "eye",
    "PROSTATE": "prostate", "COLON": "colon", "STOMACH": "stomach", "PANCREAS": "pancreas",
}
_CODED_FIELDS = {
    "Modality": ("modality", set(DICOM_MODALITIES) | NON_IMAGE_MODALITIES | {"OT", "SC", "DOC", "ES", "XC"}),
    "PhotometricInterpretation": ("photometric", {"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR",
                                                  "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT",
                                                  "YBR_PARTIAL_420"}),
    "ViewPosition": ("view_position", {"AP", "PA", "LL", "RL", "LATERAL", "RLD", "LLD", "RLO", "LLO", "CC",
                                       "MLO", "ML", "LM", "LMO", "XCC", "XCCL", "XCCM", "FB", "SIO", "ISO",
                                       "VD", "DV", "AXIAL"}),
    "ImageType": ("image_type", {"ORIGINAL", "DERIVED", "PRIMARY", "SECONDARY", "AXIAL", "LOCALIZER",
                                 "REFORMATTED", "MPR", "M", "P", "R", "I", "MAGNITUDE", "PHASE", "OTHER",
                                 "NORMAL", "DIFFUSION", "ADC", "T1", "T2", "PROJECTION IMAGE", "VOLUME"}),
    "ScanningSequence": ("scanning_sequence", {"SE", "IR", "GR", "EP", "RM"}),
}


def safe_header_summary(ds: Any) -> dict[str, Any]:
    """Non-identifying header fields as plain JSON values: numbers, and coded words from a vocabulary."""
    out: dict[str, Any] = {}
    for keyword, name in _NUMERIC_FIELDS.items():
        value = _numbers(ds.get(keyword))
        if value is not None:
            out[name] = value
    for keyword, (name, vocabulary) in _CODED_FIELDS.items():
        words = [w for w in _words(ds.get(keyword)) if w in vocabulary]
        if words:
            out[name] = words if _is_multi(ds.get(keyword)) else words[0]
    body_part = BODY_PARTS.get(" ".join(_words(ds.get("BodyPartExamined"))))
    if body_part:
        out["body_part"] = body_part
    out.setdefault("frames", 1)
    return out


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    values = value if _is_multi(value) else [value]
    return [str(v).strip().upper() for v in values if str(v).strip()]


def _numbers(value: Any) -> Any:
    """A number or a list of numbers, or None when any part is not a number."""
    if value is None or value == "":
        return None
    if _is_multi(value):
        parts = [_numbers(v) for v in value]
        return None if any(p is None or isinstance(p, list) for p in parts) else parts
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return int(number) if number.is_integer() else number


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
        raise ImageReadError(path, f"unreadable or truncated NIfTI ({type(err).__name__})") from None
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
        raise ImageReadError(path, f"unreadable NIfTI header ({type(err).__name__})") from None
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
    from pydicom import uid as uids
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"write_dicom needs 2-D uint8/uint16/int16 pixels, got {pixels.dtype} {pixels.shape}")
    storage = {"CT": uids.CTImageStorage, "MR": uids.MRImageStorage, "CR": uids.ComputedRadiographyImageStorage,
               "DX": uids.DigitalXRayImageStorageForPresentation}
    sop_class = storage.get(str(header.get("Modality", "")), uids.SecondaryCaptureImageStorage)
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
