"""Quality control: per-record checks, exact and near duplicates, benchmark leakage.

Nothing here raises on bad data: a failed check is a reason string that becomes a ``Reject``.

- Per record (``check_record``): pixel array shape/dtype, minimum size, blank (near-constant)
  images, empty or unknown labels, labels outside the dataset's label set, boxes outside [0, 1].
- Exact duplicates: MD5 of the decoded pixels (shape included). A repeat is rejected unless it is
  another annotation of the same image from the same source (e.g. one VQA record per split of
  one picture) - the paper turns those into separate samples too.
- Near duplicates: 64-bit perceptual hash (imagehash.phash), Hamming distance <= a threshold,
  across *different* sources only: adjacent slices of one volume look alike by design and must stay.
- Leakage: every image of the given benchmark folders is hashed (MD5 of its decoded pixels in the
  colour forms an adapter may produce, plus its phash); a record whose image matches is excluded
  with stage "leakage" (the paper checks MD5 hashes against every benchmark's images).

Hash lookups use multi-index hashing (pigeonhole on Hamming distance over substrings: an exact LSH,
``HashIndex``), so both checks stay fast for large corpora, find every neighbour within the distance,
and give the same answer as comparing all pairs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmai.data.records import Record

UNKNOWN_LABELS = {"", "unknown", "unk", "none", "nan", "null", "n/a", "na", "?", "-1", "unlabeled", "unlabelled",
                  "undefined", "tbd"}
LABELLED_TASKS = {"classification", "segmentation", "detection"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}


@dataclass(frozen=True)
class QualityConfig:
    min_size: int = 16  # pixels, shortest side (MedMNIST's classic 28x28 passes)
    blank_std: float = 2.0  # grey-level standard deviation below which an image is "blank"
    near_dup_distance: int = 4  # phash Hamming bits; -1 disables near-dup detection
    leak_distance: int = 4  # phash Hamming bits for the leakage check; -1 = MD5 only
    box_tolerance: float = 1e-3


# ------------------------------------------------------------------------------------------------
# Per-record checks


def check_image(image: object, cfg: QualityConfig) -> str | None:
    if not isinstance(image, np.ndarray):
        return f"image is {type(image).__name__}, not a pixel array"
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        return f"unsupported pixel array {image.dtype} {tuple(image.shape)} (need uint8 HxW or HxWx3)"
    height, width = image.shape[:2]
    if min(height, width) < cfg.min_size:
        return f"image too small ({width}x{height} px, minimum side {cfg.min_size})"
    # A strided sample of ~64x64 pixels is plenty to tell that an image is *not* near-constant (the usual
    # case), at a fraction of the cost; only a sample that looks blank is confirmed on every pixel, so
    # sampling never rejects an image that the full check would keep (thin lines between sampled pixels).
    step = max(1, min(height, width) // 64)
    spread = _grey_std(image[::step, ::step])
    if spread < cfg.blank_std and step > 1:
        spread = _grey_std(image)
    if spread < cfg.blank_std:
        return f"blank image (pixel std {spread:.2f} < {cfg.blank_std})"
    return None


def _grey_std(pixels: np.ndarray) -> float:
    """Standard deviation of uint8 values from their 256-bin histogram (no float copy of the image)."""
    counts = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64)
    n = counts.sum()
    mean = counts @ values / n
    return float(np.sqrt(max(0.0, counts @ (values * values) / n - mean * mean)))


def check_labels(record: Record) -> str | None:
    for label in record.labels:
        if str(label).strip().lower() in UNKNOWN_LABELS:
            return f"unknown label {label!r}"
    if record.task in LABELLED_TASKS and not record.labels:
        return f"empty label for a {record.task} record"
    if record.label_set:
        outside = [x for x in record.labels if x not in record.label_set]
        if outside:
            return f"label {outside[0]!r} not in the dataset's label set"
    return None


def check_boxes(record: Record, cfg: QualityConfig) -> str | None:
    tol = cfg.box_tolerance
    boxes = list(record.boxes) + [f.box for f in record.mask_facts]
    for box in boxes:
        coords = (box.x1, box.y1, box.x2, box.y2)
        if not all(math.isfinite(v) for v in coords) or min(coords) < -tol or max(coords) > 1 + tol:
            return f"box {[round(v, 4) for v in coords]} for {box.label!r} lies outside the image"
        if box.x2 <= box.x1 or box.y2 <= box.y1:
            return f"box {[round(v, 4) for v in coords]} for {box.label!r} is empty"
    return None


def check_record(record: Record, cfg: QualityConfig) -> str | None:
    """The first reason this record is unusable, or None."""
    return check_image(record.image, cfg) or check_labels(record) or check_boxes(record, cfg)


# ------------------------------------------------------------------------------------------------
# Hashes


def pixel_md5(image: np.ndarray) -> str:
    """MD5 of decoded pixels (shape included, so a 2x8 and an 8x2 image differ)."""
    digest = hashlib.md5(f"{image.shape}|".encode())
    digest.update(np.ascontiguousarray(image).data)  # the buffer itself: no bytes copy
    return digest.hexdigest()


# Rows 0-7 of the 32-point DCT-II as scipy.fftpack computes it (unnormalised: 2 * cos(...)): the 8x8
# low-frequency block imagehash's phash keeps is then two small matrix products instead of two full DCTs.
_DCT_LOW = 2.0 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(32) + 1) / 64)


def phash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash as an int: the same bits as imagehash.phash of the greyscale image
    (up to float rounding ties; the tests compare the two).

    Same steps (greyscale, Lanczos to 32x32, DCT, 8x8 low block > its median) without the two
    full 32x32 DCTs and the bool-array-to-string round trip.
    """
    from PIL import Image

    im = Image.fromarray(image)
    if im.mode != "L":
        im = im.convert("L")
    factor = min(im.size) // 64
    if factor > 1:  # box-reduce to 64-127 px first: phash only looks at 32x32, and Lanczos from 192 px costs 2x
        im = im.reduce(factor)
    pixels = np.asarray(im.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT_LOW @ pixels @ _DCT_LOW.T
    ordered = np.sort(low, axis=None)
    median = (ordered[31] + ordered[32]) / 2  # np.median of the 64 values, without its generic machinery
    bits = (low > median).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class HashIndex:
    """MD5 set + phash neighbours within ``distance`` bits, found by multi-index hashing (an exact LSH).

    The 64 bits are cut into m = distance // 2 + 1 substrings. If two hashes differ in <= d bits, some
    substring differs in <= d // m bits (pigeonhole), which is 0 or 1: each substring is indexed exactly,
    and a query probes its own substrings plus, when that radius is 1, every one-bit variant of them.
    So every neighbour within ``distance`` is found (no false negatives) while only hashes sharing a
    ~22-bit substring (d=4) are compared; with d+1 exact bands of ~13 bits instead, the buckets grow
    with the corpus (N / 8192 entries each) and a million hashes cost ~100x more
    (benchmarks/phash_lsh.py, results/phash_lsh.json).
    """

    def __init__(self, distance: int, parts: int | None = None) -> None:
        """``parts``: substrings (default distance // 2 + 1; distance + 1 gives plain exact banding)."""
        self.distance = distance
        self.md5: dict[str, str] = {}
        self.entries: list[tuple[int, str, str]] = []  # (phash, name, group)
        parts = parts or max(distance, 0) // 2 + 1
        radius = max(distance, 0) // parts
        if radius > 1:
            raise ValueError(f"{parts} substrings need a probe radius {radius} for distance {distance}: use more")
        width = -(-64 // parts)
        self._spans = [(lo, (1 << min(width, 64 - lo)) - 1) for lo in range(0, 64, width)]  # (shift, mask)
        self._probes = [[0] + ([1 << b for b in range(mask.bit_length())] if radius else [])
                        for _, mask in self._spans]
        self._tables: list[dict[int, list[int]]] = [{} for _ in self._spans]

    def add(self, md5s: Iterable[str], value: int | None, name: str, group: str = "") -> None:
        for digest in md5s:
            self.md5.setdefault(digest, name)
        if value is None or self.distance < 0:
            return
        self.entries.append((value, name, group))
        position = len(self.entries) - 1
        for (shift, mask), table in zip(self._spans, self._tables):
            table.setdefault((value >> shift) & mask, []).append(position)

    def _candidates(self, value: int) -> list[int]:
        """Positions of every entry that may lie within the distance (a superset of those that do)."""
        found: set[int] = set()
        for (shift, mask), table, probes in zip(self._spans, self._tables, self._probes):
            key = (value >> shift) & mask
            for flip in probes:
                bucket = table.get(key ^ flip)
                if bucket:
                    found.update(bucket)
        return sorted(found)

    def near(self, value: int, exclude_group: str | None = None) -> tuple[str, int] | None:
        """The closest earlier entry within the distance (first added wins ties), or None."""
        if self.distance < 0:
            return None
        candidates = self._candidates(value)
        best: tuple[int, int] | None = None
        for i in candidates:
            other, _, group = self.entries[i]
            if exclude_group is not None and group == exclude_group:
                continue
            d = hamming(value, other)
            if d <= self.distance and (best is None or d < best[0]):
                best = (d, i)
        return None if best is None else (self.entries[best[1]][1], best[0])


# ------------------------------------------------------------------------------------------------
# Leakage


def pixel_variants(pil_image: object) -> list[np.ndarray]:
    """The pixel arrays an adapter may make of one file: as stored, RGB, greyscale, single channel."""
    from PIL import Image

    assert isinstance(pil_image, Image.Image)
    variants = [np.asarray(pil_image)]
    if pil_image.mode != "RGB":
        variants.append(np.asarray(pil_image.convert("RGB")))
    if pil_image.mode != "L":
        variants.append(np.asarray(pil_image.convert("L")))
    rgb = np.asarray(pil_image.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        variants.append(np.ascontiguousarray(rgb[..., 0]))
    return [v for v in variants if v.dtype == np.uint8]


def _hash_benchmark_file(path: Path) -> tuple[list[str], int | None, str]:
    """(MD5s of the pixel forms, phash, error message) of one benchmark image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            md5s = sorted({pixel_md5(v) for v in pixel_variants(im)})
            value = phash(np.asarray(im.convert("L")))
    except Exception as error:
        return [], None, str(error) or type(error).__name__
    return md5s, value, ""


@dataclass
class LeakageIndex:
    """Hashes of benchmark images; ``match`` says which benchmark image a training image is."""

    index: HashIndex
    folders: list[str] = field(default_factory=list)
    images: int = 0
    unreadable: list[str] = field(default_factory=list)

    @classmethod
    def from_folders(cls, folders: Iterable[Path | str], distance: int = 4, workers: int = 1) -> LeakageIndex:
        """Hash every image under the folders (in ``workers`` processes; the result does not depend on it)."""
        leak = cls(HashIndex(distance))
        jobs: list[tuple[Path, str]] = []
        for folder in folders:
            folder = Path(folder)
            if not folder.is_dir():
                raise FileNotFoundError(f"benchmark folder {folder} does not exist")
            leak.folders.append(str(folder))
            jobs += [(p, str(p.relative_to(folder.parent))) for p in sorted(folder.rglob("*"))
                     if p.suffix.lower() in IMAGE_SUFFIXES]
        if workers > 1 and len(jobs) > 16:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(_hash_benchmark_file, [p for p, _ in jobs], chunksize=8))
        else:
            results = [_hash_benchmark_file(p) for p, _ in jobs]
        for (path, name), (md5s, value, error) in zip(jobs, results):
            if error:  # a broken benchmark file is reported, never fatal
                leak.unreadable.append(f"{name}: unreadable")  # benchmark-relative; the error text can hold paths
                continue
            leak.index.add(md5s, value, name)
            leak.images += 1
        return leak

    def match(self, md5: str, value: int | None) -> str | None:
        """'<benchmark image> (md5)' or '<benchmark image> (phash distance d)' or None."""
        if md5 in self.index.md5:
            return f"{self.index.md5[md5]} (identical pixels, md5)"
        if value is not None:
            hit = self.index.near(value)
            if hit:
                return f"{hit[0]} (perceptual hash distance {hit[1]})"
        return None


# ------------------------------------------------------------------------------------------------
# Dedup (order-dependent: the build runs it once, sequentially, in the deterministic record order)


class Deduper:
    def __init__(self, near_distance: int) -> None:
        self.seen: dict[str, list[tuple[str, str, str]]] = {}  # md5 -> [(source, annotation, ref)]
        self.near_index = HashIndex(near_distance)

    def check(self, md5: str, value: int | None, source: str, annotation: str, ref: str) -> str | None:
        """A reason when this image repeats an earlier kept one, else None (and remember it)."""
        for other_source, other_annotation, other_ref in self.seen.get(md5, []):
            if other_source != source or other_annotation == annotation:
                return f"exact duplicate of {other_ref} (identical pixels)"
        if md5 not in self.seen and value is not None:
            hit = self.near_index.near(value, exclude_group=source)
            if hit:
                return f"near duplicate of {hit[0]} (perceptual hash distance {hit[1]})"
        if md5 not in self.seen and value is not None:
            self.near_index.add((), value, ref, group=source)
        self.seen.setdefault(md5, []).append((source, annotation, ref))
        return None
