"""Test helpers: a stand-in backend (no model) and a cheap decompression-bomb PNG."""

from __future__ import annotations

import struct
import threading
import time
import zlib

from gmai.infer.types import Completion, GenerationConfig, PromptTooLongError, truncate_at_stop


class FakeBackend:
    """Echoes the last user text; records batch sizes. Stands in for a model in fast tests.

    Like LocalBackend, input errors surface in ``prepare`` (render + tokenize): ``fail_on`` text
    raises there and in ``complete``; a prompt over ``context_chars`` is too long. ``token_s``
    makes ``complete`` spend that much CPU per token and row (``max_new_tokens`` of them), honouring
    ``should_stop`` at each token as LocalBackend does; ``tokens_generated`` counts them."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None, token_s: float = 0.0,
                 context_chars: int = 10**9):
        self.delay, self.fail_on, self.token_s, self.context_chars = delay, fail_on, token_s, context_chars
        self.batches: list[int] = []
        self.prepared = 0
        self.tokens_generated = 0
        self.lock = threading.Lock()

    def _reply(self, request) -> str:
        if self.fail_on and self.fail_on in str(request.messages):
            raise RuntimeError("poisoned request")
        text = request.messages[-1]["content"] if request.messages else request.prompt
        return f"echo {text} images={len(request.images)}"

    def prepare(self, request, config: GenerationConfig):
        with self.lock:
            self.prepared += 1
        self._reply(request)
        if len(str(request.messages)) > self.context_chars:
            raise PromptTooLongError("prompt exceeds the fake context")
        return {"request": request}

    def complete(self, requests, config: GenerationConfig, batch_size: int = 16, prepared=None, should_stop=None):
        with self.lock:
            self.batches.append(len(requests))
        time.sleep(self.delay)
        if self.token_s:
            self._spend_tokens(len(requests), config.max_new_tokens, should_stop)
        out = []
        for r in requests:
            text = truncate_at_stop(self._reply(r), config.stop)
            out.append([Completion(text, "stop", 10, len(text.split())) for _ in range(config.num_return_sequences)])
        return out

    def _spend_tokens(self, rows: int, tokens: int, should_stop) -> None:
        live = set(range(rows))
        for _ in range(tokens):
            if should_stop:
                live = {i for i in live if not should_stop[i]()}
            if not live:
                return
            end = time.process_time() + self.token_s * len(live)  # CPU time, as a model's forward pass
            while time.process_time() < end:
                pass
            with self.lock:
                self.tokens_generated += len(live)

    def stream(self, request, config: GenerationConfig, should_stop=None):
        text = self._reply(request)
        for i in range(0, len(text), 3):  # 3-character pieces: stop strings straddle pieces
            if should_stop and should_stop():
                break
            yield text[i:i + 3]
        return Completion("", "stop", 10, len(text.split()))


class NoPrepareBackend(FakeBackend):
    """A backend that cannot check a request alone (like a remote OpenAI-compatible one)."""

    prepare = None


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height, all black, built row by row: tens of KB on the wire."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    packer, parts = zlib.compressobj(9), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def dicom_bytes(rows: int, cols: int, frames: list[bytes], syntax: str, bits: int = 8) -> bytes:
    """A CT DICOM file whose pixel data is ``frames`` (encapsulated for a compressed ``syntax``),
    written by pydicom as a real Part 10 file (preamble, file meta, then the dataset)."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CT", rows, cols, 1
    ds.PhotometricInterpretation, ds.PixelRepresentation = "MONOCHROME2", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (16, 12, 11) if bits == 16 else (8, 8, 7)
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    if syntax == ExplicitVRLittleEndian:
        ds.PixelData = b"".join(frames)
    else:
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def j2k_frame(rows: int, cols: int) -> bytes:
    """One lossless JPEG 2000 codestream of a 12-bit gradient (Pillow's OpenJPEG encoder)."""
    import io

    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:rows, 0:cols]
    buf = io.BytesIO()
    Image.fromarray(((xx * 7 + yy * 3) % 4096).astype(np.uint16)).save(buf, format="JPEG2000", no_jp2=True,
                                                                        irreversible=False)
    return buf.getvalue()


def rle_slowest_frame(rows: int, cols: int) -> bytes:
    """One 8-bit RLE Lossless frame (DICOM PS3.5 Annex G: a 64-byte header, then one segment) made
    of 1-byte literal runs: the longest stream, and the most runs to decode, for its pixels."""
    header = struct.pack("<16L", 1, 64, *([0] * 14))
    return header + b"\x00\x07" * (rows * cols)


def spin_cpu(seconds: float) -> float:
    """Burn ``seconds`` of CPU time (a decoding worker's stand-in for a costly input)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return seconds
