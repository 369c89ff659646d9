"""Turn an OpenAI ``image_url`` part into a PIL image, refusing anything unbounded or unsafe.

Accepted: ``data:<mime>;base64,...`` URLs (PNG, JPEG, WebP, BMP, GIF, TIFF; ``application/dicom``),
and local paths (``file://`` or plain) that resolve under the allowed root given at start.
Remote URLs are refused (no outbound fetches from the server).

Every check happens before pixels are decoded: encoded size, then the dimensions from the file
header (a 20k x 20k PNG is a few KB on the wire and 1.2 GB decoded). DICOM bytes go to
:mod:`gmai.data.imaging`, which de-identifies the header on read; nothing here looks at a DICOM
header or logs upload content.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from gmai.serve.errors import APIError, bad_request

PIL_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
DICOM_MIME_TYPES = {"application/dicom", "application/dicom+binary", "image/dicom"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,", re.I)


@dataclass(frozen=True)
class ImageLimits:
    max_image_pixels: int = 25_000_000  # 5000 x 5000: a large mammogram fits, a bomb does not
    max_images: int = 8
    max_image_bytes: int = 16 * 1024 * 1024
    allowed_root: Path | None = None  # local paths are refused unless set
    # Decoded images are shrunk (aspect kept) to this longest side, so a queued request holds at
    # most max_images x side^2 x 3 bytes. Vision processors resize far below this anyway
    # (LLaVA: 336 px). 0 keeps full size.
    max_side: int = 1344


def load_image_url(url: str, limits: ImageLimits, param: str) -> Image.Image:
    """The image behind one ``image_url.url`` value; ``param`` names it in error messages."""
    if not isinstance(url, str) or not url:
        raise bad_request("image_url.url must be a non-empty string", param)
    return _bounded(_load(url, limits, param), limits.max_side)


def _load(url: str, limits: ImageLimits, param: str) -> Image.Image:
    if url[:5].lower() == "data:":
        mime, data = _decode_data_url(url, limits, param)
        if mime in DICOM_MIME_TYPES or _looks_like_dicom(data):
            return _dicom_bytes_to_image(data, limits, param)
        return _open_pil(io.BytesIO(data), limits, param)
    if re.match(r"^[a-z][a-z0-9+.-]*://", url, re.I) and not url.lower().startswith("file://"):
        raise bad_request("remote image URLs are not fetched by this server: send the image inline as a "
                          "base64 data URL", param, "remote_url_refused")
    return _local_image(url, limits, param)


def _bounded(image: Image.Image, max_side: int) -> Image.Image:
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _decode_data_url(url: str, limits: ImageLimits, param: str) -> tuple[str, bytes]:
    match = _DATA_URL.match(url)
    if not match:
        raise bad_request("image data URL must look like data:<mime>;base64,<data>", param, "invalid_data_url")
    payload = url[match.end():]
    if len(payload) > (limits.max_image_bytes * 4) // 3 + 4:
        raise bad_request(f"image is larger than {limits.max_image_bytes} bytes", param, "image_too_large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("image data URL is not valid base64", param, "invalid_base64") from None
    if not data:
        raise bad_request("image data URL holds no bytes", param, "invalid_image")
    return (match.group("mime") or "").lower(), data


def _looks_like_dicom(head: bytes) -> bool:
    return head[128:132] == b"DICM"  # Part 10 files: a 128-byte preamble, then the magic


def _check_pixels(width: int, height: int, frames: int, limits: ImageLimits, param: str) -> None:
    pixels = int(width) * int(height) * max(1, int(frames))
    if width <= 0 or height <= 0:
        raise bad_request("image has no pixels", param, "invalid_image")
    if pixels > limits.max_image_pixels:
        raise bad_request(f"image of {width}x{height}" + (f"x{frames} frames" if frames > 1 else "") +
                          f" = {pixels} pixels exceeds the limit of {limits.max_image_pixels} pixels",
                          param, "image_too_large")


def _open_pil(source, limits: ImageLimits, param: str) -> Image.Image:
    try:
        image = Image.open(source, formats=PIL_FORMATS)  # lazy: reads the header only
    except Image.DecompressionBombError as err:
        raise bad_request(f"image rejected as a decompression bomb ({err})", param, "image_too_large") from None
    except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise bad_request(f"not a readable image (accepted: {', '.join(PIL_FORMATS)}, DICOM)", param,
                          "invalid_image") from None
    _check_pixels(image.width, image.height, 1, limits, param)  # before any pixel is decoded
    try:
        image.load()
        return _to_model_mode(image)
    except Image.DecompressionBombError as err:
        raise bad_request(f"image rejected as a decompression bomb ({err})", param, "image_too_large") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise bad_request(f"truncated or corrupt image ({type(err).__name__})", param, "invalid_image") from None


def _to_model_mode(image: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit and float grayscale are rescaled (not clipped) via gmai.data.imaging."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        from gmai.data.imaging import to_uint8

        return Image.fromarray(to_uint8(np.asarray(image).astype(np.float64))).convert("RGB")
    return image.convert("RGB")


def _dicom_path_to_image(path: Path, limits: ImageLimits, param: str) -> Image.Image:
    dicom = read_dicom_checked(path, limits, param)
    frame = dicom.frames[len(dicom.frames) // 2]  # a multi-frame object: its middle frame
    return Image.fromarray(frame).convert("RGB")


def read_dicom_checked(path: Path, limits: ImageLimits, param: str = "file"):
    """gmai.data.imaging's DicomImage (header de-identified on read), refusing oversize pixel data
    from the header before any pixel is decoded."""
    from gmai.data.imaging import ImageReadError, read_dicom, read_dicom_dataset

    try:
        header = read_dicom_dataset(path)  # de-identified; pixel data stays encoded here
        columns, rows = int(header.get("Columns", 0) or 0), int(header.get("Rows", 0) or 0)
        if columns and rows:  # without them read_dicom below explains what is wrong
            _check_pixels(columns, rows, int(header.get("NumberOfFrames", 1) or 1), limits, param)
        del header
        return read_dicom(path)
    except ImageReadError as err:
        raise bad_request(f"unusable DICOM: {err.reason}", param, "invalid_dicom") from None


def _dicom_bytes_to_image(data: bytes, limits: ImageLimits, param: str) -> Image.Image:
    # gmai.data.imaging reads paths: the upload goes to a private (0600) temp file, removed at once.
    fd, name = tempfile.mkstemp(suffix=".dcm", prefix="gmai-upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return _dicom_path_to_image(Path(name), limits, param)
    finally:
        os.unlink(name)


def _local_image(url: str, limits: ImageLimits, param: str) -> Image.Image:
    if limits.allowed_root is None:
        raise APIError(403, "local image paths are disabled: start the server with --allowed-root DIR, or "
                            "send the image as a base64 data URL", type="permission_error", param=param,
                       code="local_paths_disabled")
    raw = url[7:] if url.lower().startswith("file://") else url
    root = limits.allowed_root.resolve()
    candidate = Path(raw).expanduser()
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()  # follows symlinks
    if not resolved.is_relative_to(root):
        raise APIError(403, "image path is outside the server's allowed root", type="permission_error",
                       param=param, code="path_not_allowed")
    if not resolved.is_file():
        raise bad_request("image path does not name a file under the allowed root", param, "file_not_found")
    if resolved.stat().st_size > limits.max_image_bytes:
        raise bad_request(f"image file is larger than {limits.max_image_bytes} bytes", param, "image_too_large")
    with open(resolved, "rb") as fh:
        head = fh.read(132)
    if resolved.suffix.lower() == ".dcm" or _looks_like_dicom(head):
        return _dicom_path_to_image(resolved, limits, param)
    return _open_pil(io.BytesIO(resolved.read_bytes()), limits, param)


def decode_images(refs: list[tuple[str, str]], limits: ImageLimits) -> list[Image.Image]:
    """Every image of one request, in order: ``refs`` are (url, param) pairs. The server runs this
    in a decoding worker process (gmai.serve.workers), with a time and memory budget."""
    return [load_image_url(url, limits, param) for url, param in refs]
