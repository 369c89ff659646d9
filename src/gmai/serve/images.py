"""Turn an OpenAI ``image_url`` part into a PIL image, refusing anything unbounded or unsafe.

Accepted: ``data:<mime>;base64,...`` URLs (PNG, JPEG, WebP, BMP, GIF, TIFF; ``application/dicom``),
and local paths (``file://`` or plain) that resolve under the allowed root given at start.
Remote URLs are refused (no outbound fetches from the server).

Every check happens before pixels are decoded: encoded size, then the dimensions from the file
header (a 20k x 20k PNG is a few KB on the wire and 1.2 GB decoded). Before a request is sent to
a decoding worker, :func:`decode_cost` reads only the headers (the first bytes of each image) and
prices the decoding: pixels x frames x a factor for the codec (JPEG 2000 decodes ~10x slower per
pixel than PNG). Bombs (decoded size over ``max_compression_ratio`` times the encoded size) and
requests over ``max_decode_units`` are refused there, and the price picks the decoding lane and
time budget (gmai.serve.api). DICOM bytes are decoded by :mod:`gmai.data.imaging`, which
de-identifies the header on read; the price reads only the size and transfer-syntax tags, and
nothing here logs upload content.
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
    # Decoded bytes (RGBA-sized) over this many times the encoded bytes: a decompression bomb. Real
    # photos and scans compress 2-50x; a flat 5000 x 5000 PNG of zeros, ~30000x.
    max_compression_ratio: int = 1000
    max_decode_units: int = 150_000_000  # per request; a unit ~ one PNG pixel's decoding work


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


def _data_url_payload(url: str, limits: ImageLimits, param: str) -> tuple[str, str]:
    """(mime, base64 payload) of a data URL, its size checked."""
    match = _DATA_URL.match(url)
    if not match:
        raise bad_request("image data URL must look like data:<mime>;base64,<data>", param, "invalid_data_url")
    payload = url[match.end():]
    if len(payload) > (limits.max_image_bytes * 4) // 3 + 4:
        raise bad_request(f"image is larger than {limits.max_image_bytes} bytes", param, "image_too_large")
    return (match.group("mime") or "").lower(), payload


def _b64decode(payload: str, param: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("image data URL is not valid base64", param, "invalid_base64") from None


def _decode_data_url(url: str, limits: ImageLimits, param: str) -> tuple[str, bytes]:
    mime, payload = _data_url_payload(url, limits, param)
    data = _b64decode(payload, param)
    if not data:
        raise bad_request("image data URL holds no bytes", param, "invalid_image")
    return mime, data


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
    _check_ratio(image.width * image.height, len(source.getbuffer()), limits, param)
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
    resolved = _allowed_path(url, limits, param)
    if resolved.stat().st_size > limits.max_image_bytes:
        raise bad_request(f"image file is larger than {limits.max_image_bytes} bytes", param, "image_too_large")
    with open(resolved, "rb") as fh:
        head = fh.read(132)
    if resolved.suffix.lower() == ".dcm" or _looks_like_dicom(head):
        return _dicom_path_to_image(resolved, limits, param)
    return _open_pil(io.BytesIO(resolved.read_bytes()), limits, param)


def _allowed_path(url: str, limits: ImageLimits, param: str) -> Path:
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
    return resolved


# ---------------------------------------------------------------------------------- pricing from headers
HEADER_BYTES = 256 * 1024  # enough for a DICOM header before its pixel data, and any PNG/JPEG header
RATIO_FLOOR_BYTES = 16 * 1024 * 1024  # smaller images are cheap whatever their ratio
# Decoding work per pixel relative to PNG (measured: PNG ~40 Mpx/s, JPEG 2000 lossless ~3-7 Mpx/s,
# pydicom's pure-Python RLE ~4 Mpx/s on its worst stream). Unknown syntaxes price as the costliest.
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}
_JPEG_BASELINE_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}
RLE_SYNTAX = "1.2.840.10008.1.2.5"
COSTLY_CODEC_FACTOR = 10
RLE_FACTOR = 8


@dataclass(frozen=True)
class ImagePrice:
    units: int  # decoding work, ~ PNG pixels
    known: bool  # False: the header could not be read from the first bytes; priced as the worst case


def _codec_factor(syntax: str) -> int:
    if syntax in _NATIVE_SYNTAXES or syntax in _JPEG_BASELINE_SYNTAXES:
        return 1
    return RLE_FACTOR if syntax == RLE_SYNTAX else COSTLY_CODEC_FACTOR


def _image_head(url: str, limits: ImageLimits, param: str) -> tuple[bytes, int, str]:
    """The first HEADER_BYTES of an image, its encoded size and its declared mime, without decoding
    the rest. Local paths are checked (root, size) as when they are decoded."""
    if url[:5].lower() == "data:":
        mime, payload = _data_url_payload(url, limits, param)
        head = payload[:HEADER_BYTES * 4 // 3]
        return _b64decode(head[:len(head) - len(head) % 4], param), len(payload) * 3 // 4, mime
    if re.match(r"^[a-z][a-z0-9+.-]*://", url, re.I) and not url.lower().startswith("file://"):
        return b"", 0, ""  # refused when decoded, at no cost
    try:
        path = _allowed_path(url, limits, param)
    except APIError:
        return b"", 0, ""  # the same refusal comes from the decoder, with its own status
    with open(path, "rb") as fh:
        return fh.read(HEADER_BYTES), path.stat().st_size, "application/dicom" if path.suffix.lower() == ".dcm" else ""


def _dicom_price(head: bytes, encoded: int, limits: ImageLimits, param: str) -> ImagePrice:
    import pydicom

    from gmai.data.imaging import quiet_pydicom

    try:  # only the size and syntax tags: nothing that identifies a patient is read
        with quiet_pydicom():
            header = pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True, force=True, specific_tags=[
                "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated"])
        rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        frames = int(header.get("NumberOfFrames", 1) or 1)
        syntax = str(getattr(header, "file_meta", {}).get("TransferSyntaxUID", "") or "")
    except Exception:  # noqa: BLE001 - a header beyond the first bytes, or junk: the decoder explains
        return ImagePrice(limits.max_image_pixels * COSTLY_CODEC_FACTOR, known=False)
    if not (rows and columns):
        return ImagePrice(limits.max_image_pixels * COSTLY_CODEC_FACTOR, known=False)
    _check_pixels(columns, rows, frames, limits, param)
    _check_ratio(columns * rows * max(1, frames), encoded, limits, param)
    pixels = columns * rows * max(1, frames)
    if syntax == RLE_SYNTAX:  # decoding work follows the stream's length, whatever the header says
        pixels = max(pixels, encoded)
    elif syntax not in _NATIVE_SYNTAXES:
        coded = _codestream_size(head)
        if coded is None:  # the first frame's size is not in the first bytes: price it as the worst case
            return ImagePrice(limits.max_image_pixels * COSTLY_CODEC_FACTOR, known=False)
        if coded[0] * coded[1] > columns * rows:  # a decoder decodes what the codestream says
            raise bad_request(f"DICOM pixel data is coded as {coded[0]}x{coded[1]}, larger than its header's "
                              f"{columns}x{rows}", param, "invalid_dicom")
    return ImagePrice(pixels * _codec_factor(syntax), known=True)


def _codestream_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) of the first JPEG 2000 (SIZ marker) or JPEG (SOFn marker) codestream in
    ``head``, read from its marker segments alone; None when none is found there."""
    import struct

    j2k = head.find(b"\xff\x4f\xff\x51")  # SOC then SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz
    jpeg = head.find(b"\xff\xd8\xff")  # SOI, then a marker
    if j2k >= 0 and (jpeg < 0 or j2k < jpeg) and len(head) >= j2k + 24:
        x, y, x0, y0 = struct.unpack(">4I", head[j2k + 8:j2k + 24])
        return x - x0, y - y0
    pos = jpeg + 2 if jpeg >= 0 else len(head)
    while pos + 9 <= len(head) and head[pos] == 0xFF:
        marker, length = head[pos + 1], struct.unpack(">H", head[pos + 2:pos + 4])[0]
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack(">HH", head[pos + 5:pos + 9])
            return width, height
        pos += 2 + length
    return None


_JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}  # F7: JPEG-LS


def _check_ratio(pixels: int, encoded: int, limits: ImageLimits, param: str) -> None:
    decoded = pixels * 4  # what the server holds once it is RGB(A)
    if decoded > RATIO_FLOOR_BYTES and encoded and decoded > limits.max_compression_ratio * encoded:
        raise bad_request(f"image rejected as a decompression bomb: {pixels} pixels from {encoded} bytes "
                          f"(over {limits.max_compression_ratio}:1)", param, "image_too_large")


def image_price(url: str, limits: ImageLimits, param: str) -> ImagePrice:
    """The decoding work of one image, read from its header; header-level refusals (pixel count,
    bomb ratio) are raised here, before any worker is involved."""
    if not isinstance(url, str) or not url:
        raise bad_request("image_url.url must be a non-empty string", param)
    head, encoded, mime = _image_head(url, limits, param)
    if not head:
        return ImagePrice(0, known=True)
    if mime in DICOM_MIME_TYPES or _looks_like_dicom(head):
        return _dicom_price(head, encoded, limits, param)
    try:
        with Image.open(io.BytesIO(head), formats=PIL_FORMATS) as image:  # the header only
            width, height = image.size
            frames = 1  # animated GIF/WebP and multi-page TIFF: the first frame only is decoded
    except Image.DecompressionBombError as err:
        raise bad_request(f"image rejected as a decompression bomb ({err})", param, "image_too_large") from None
    except Exception:  # noqa: BLE001 - e.g. a JPEG whose size marker lies past the first bytes
        return ImagePrice(limits.max_image_pixels * COSTLY_CODEC_FACTOR, known=False)
    _check_pixels(width, height, frames, limits, param)
    _check_ratio(width * height, encoded, limits, param)
    return ImagePrice(width * height, known=True)


def decode_cost(refs: list[tuple[str, str]], limits: ImageLimits) -> int:
    """The decoding work of a request's images (units ~ PNG pixels), from their headers alone;
    raises the header-level refusals, and refuses a request whose total is over the budget."""
    total = sum(image_price(url, limits, param).units for url, param in refs)
    if total > limits.max_decode_units:
        raise bad_request(f"decoding these images would cost {total} units (pixels x frames x codec factor; "
                          f"JPEG 2000 and other costly codecs count {COSTLY_CODEC_FACTOR}x, RLE {RLE_FACTOR}x), "
                          f"over this server's per-request budget of {limits.max_decode_units}", "messages",
                          "image_too_costly")
    return total


def decode_images(refs: list[tuple[str, str]], limits: ImageLimits) -> list[Image.Image]:
    """Every image of one request, in order: ``refs`` are (url, param) pairs. The server runs this
    in a decoding worker process (gmai.serve.workers), with a time and memory budget."""
    return [load_image_url(url, limits, param) for url, param in refs]
