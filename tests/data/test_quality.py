"""Quality control: per-record checks, hashes, dedup rules, leakage index."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gmai.data.quality import (Deduper, HashIndex, LeakageIndex, QualityConfig, check_record, hamming, phash,
                               pixel_md5)
from gmai.data.records import Box, Record

CFG = QualityConfig()


def textured(seed: int, size: int = 64, rgb: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    image = np.kron(base, np.ones((size // 8, size // 8), dtype=np.uint8))  # blocky: a stable phash
    return np.stack([image] * 3, axis=-1) if rgb else image


def record(image=None, **kw) -> Record:
    fields = dict(ref="r", source="toy", task="classification", modality="CT", labels=["a"], label_set=["a", "b"])
    fields.update(kw)
    return Record(image=textured(0) if image is None else image, **fields)


@pytest.mark.parametrize("rec,reason", [
    (record(), None),
    (record(textured(0, size=8)), "image too small"),
    (record(np.full((64, 64), 7, np.uint8)), "blank image"),
    (record(np.zeros((64, 64), np.float32)), "unsupported pixel array"),
    (record("not an array"), "not a pixel array"),
    (record(labels=[]), "empty label"),
    (record(labels=["unknown"]), "unknown label"),
    (record(labels=["nan"]), "unknown label"),
    (record(labels=["c"]), "not in the dataset's label set"),
    (record(task="vqa", labels=[]), None),  # VQA records need no label
    (record(boxes=[Box("a", 0.1, 0.1, 1.2, 0.5)]), "outside the image"),
    (record(boxes=[Box("a", 0.5, 0.1, 0.4, 0.5)]), "is empty"),
    (record(boxes=[Box("a", 0.0, 0.0, 1.0, 1.0)]), None),
])
def test_check_record(rec, reason):
    found = check_record(rec, CFG)
    assert (found is None) if reason is None else (reason in found), found


def test_pixel_md5_sees_pixels_and_shape():
    a = textured(1)
    assert pixel_md5(a) == pixel_md5(a.copy())
    b = a.copy()
    b[0, 0] ^= 1
    assert pixel_md5(a) != pixel_md5(b)
    assert pixel_md5(np.zeros((2, 8), np.uint8)) != pixel_md5(np.zeros((8, 2), np.uint8))


def test_phash_robust_to_resize_and_distinct_images():
    a = textured(1, 128)
    smaller = np.asarray(Image.fromarray(a).resize((96, 96)))
    assert hamming(phash(a), phash(smaller)) <= 4
    assert hamming(phash(a), phash(textured(2, 128))) > 10


def test_hash_index_band_lookup_finds_all_neighbours():
    rng = np.random.default_rng(0)
    index = HashIndex(distance=4)
    values = [int(rng.integers(0, 2**63)) for _ in range(300)]
    for i, v in enumerate(values):
        index.add([f"m{i}"], v, f"n{i}")
    for trial in range(100):
        target = values[trial]
        flipped = target
        for bit in rng.choice(64, size=int(rng.integers(0, 5)), replace=False):
            flipped ^= 1 << int(bit)
        hit = index.near(flipped)
        assert hit is not None and hit[1] <= 4
        brute = min(hamming(flipped, v) for v in values)
        assert hit[1] == brute


def test_deduper_rules():
    dedup = Deduper(near_distance=4)
    img = textured(3)
    md5, ph = pixel_md5(img), phash(img)
    assert dedup.check(md5, ph, "A", "ann1", "a1") is None
    assert dedup.check(md5, ph, "A", "ann2", "a2") is None  # same image, another annotation, same source
    assert "exact duplicate of a1" in dedup.check(md5, ph, "A", "ann1", "a3")  # same annotation again
    assert "exact duplicate" in dedup.check(md5, ph, "B", "ann9", "b1")  # another dataset's copy
    resized = np.asarray(Image.fromarray(img).resize((60, 60)))
    near = dedup.check(pixel_md5(resized), phash(resized), "B", "x", "b2")
    assert near and "near duplicate of a1" in near
    # within one source, look-alikes (adjacent slices) are kept
    assert dedup.check(pixel_md5(resized), phash(resized), "A", "x", "a4") is None


def test_leakage_index_matches_colour_forms_and_reencodes(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    grey, colour, other = textured(10), textured(11, rgb=True), textured(12)
    Image.fromarray(grey).convert("RGB").save(bench / "grey_as_rgb.jpg", quality=95)
    Image.fromarray(colour).save(bench / "colour.png")
    (bench / "broken.png").write_bytes(b"\x89PNG not really")
    leak = LeakageIndex.from_folders([bench], distance=4)
    assert leak.images == 2 and len(leak.unreadable) == 1
    # exact pixels of the PNG, as RGB and as an adapter's greyscale conversion
    assert "md5" in leak.match(pixel_md5(colour), phash(colour))
    as_grey = np.asarray(Image.fromarray(colour).convert("L"))
    assert "md5" in leak.match(pixel_md5(as_grey), phash(as_grey))
    # the JPEG's original greyscale pixels differ from the decoded file, phash still catches it
    hit = leak.match(pixel_md5(grey), phash(grey))
    assert hit and "grey_as_rgb.jpg" in hit
    assert leak.match(pixel_md5(other), phash(other)) is None
    with pytest.raises(FileNotFoundError):
        LeakageIndex.from_folders([tmp_path / "missing"])


def test_phash_matches_imagehash_and_md5_matches_tobytes():
    """The matrix-DCT phash gives imagehash's bits; the buffer MD5 is the MD5 of the pixel bytes."""
    import hashlib

    import imagehash

    rng = np.random.default_rng(3)
    images = [textured(seed, size) for seed in range(4) for size in (40, 128, 200)]
    images += [rng.integers(0, 256, (97, 301, 3), dtype=np.uint8), np.zeros((64, 64), np.uint8)]
    for image in images:
        im = Image.fromarray(image).convert("L")
        factor = min(im.size) // 64
        reference = imagehash.phash(im.reduce(factor) if factor > 1 else im).hash.flatten()
        assert phash(image) == int("".join("1" if b else "0" for b in reference), 2)
        expected = hashlib.md5(f"{image.shape}|".encode() + image.tobytes()).hexdigest()
        assert pixel_md5(image) == expected
        assert pixel_md5(image[:, ::2]) == hashlib.md5(f"{image[:, ::2].shape}|".encode()
                                                      + image[:, ::2].tobytes()).hexdigest()


def test_blank_check_std_matches_numpy():
    from gmai.data.quality import _grey_std

    rng = np.random.default_rng(4)
    for image in (rng.integers(0, 256, (50, 70), dtype=np.uint8), np.full((30, 30), 7, np.uint8),
                  rng.integers(100, 103, (64, 64, 3), dtype=np.uint8)):
        assert abs(_grey_std(image) - float(image.std())) < 1e-9


def test_blank_check_confirms_a_blank_looking_sample_on_every_pixel():
    """The strided sample only decides 'not blank'; a thin structure between sampled pixels is kept."""
    lines = np.zeros((256, 256), np.uint8)
    lines[:, 1::4] = 200  # columns the 4-pixel stride never samples
    assert check_record(record(lines), CFG) is None
    assert "blank image" in check_record(record(np.full((256, 256), 3, np.uint8)), CFG)
