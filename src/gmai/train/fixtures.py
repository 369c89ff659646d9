"""A small SYNTHETIC corpus in the data engine's format, for tests and benchmarks.

Layout (as ``gmai data build`` writes it): ``OUT/<Subset>.jsonl`` with LLaVA/XTuner lines
``{"id", "image": "images/...png" (relative to OUT), "conversations": [...], "split", ...}``;
a line without ``image`` is a text-only dialogue. The images are drawn shapes on a noisy
background, not medical images; the captions describe what was drawn, so a model can learn them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

MODALITIES = ["CT", "MR", "X-ray", "ultrasound", "fundus", "pathology"]
SHAPES = ["round", "square"]
LOCATIONS = {"left upper": (0.25, 0.25), "right upper": (0.75, 0.25), "left lower": (0.25, 0.75),
             "right lower": (0.75, 0.75), "central": (0.5, 0.5)}
BRIGHTNESS = {"CT": 60, "MR": 90, "X-ray": 120, "ultrasound": 40, "fundus": 150, "pathology": 190}


def _draw(modality: str, shape: str, location: str, size: int, rng: random.Random):
    import numpy as np
    from PIL import Image, ImageDraw

    base = BRIGHTNESS[modality]
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, 12, (size, size))
    arr = np.clip(base + noise, 0, 255).astype("uint8")
    img = Image.fromarray(arr, mode="L")
    if modality in ("fundus", "pathology"):  # colour modalities
        img = Image.merge("RGB", (img, img.point(lambda v: v * 0.6), img.point(lambda v: v * 0.4)))
    cx, cy = LOCATIONS[location]
    r = size * rng.uniform(0.1, 0.16)
    box = (cx * size - r, cy * size - r, cx * size + r, cy * size + r)
    draw = ImageDraw.Draw(img)
    fill = 255 if img.mode == "L" else (255, 255, 255)
    (draw.ellipse if shape == "round" else draw.rectangle)(box, fill=fill)
    return img, [round(v / size, 3) for v in box]


def _caption(modality, shape, location, rng):
    templates = [
        "A {m} image showing a bright {s} lesion in the {l} region.",
        "This {m} scan shows one {s} bright finding located in the {l} part of the image.",
        "{M} image: a single {s} hyperintense area is visible in the {l} region, the rest looks uniform.",
    ]
    return rng.choice(templates).format(m=modality, M=modality, s=shape, l=location)


def write_synthetic_corpus(out: str | Path, n_images: int = 60, seed: int = 0, image_size: int = 96,
                           heldout_fraction: float = 0.1, n_text: int = 20, short_captions: int = 3,
                           long_reports: bool = True) -> Path:
    """Write MM-Caption / MM-Instruct / MM-Percept / Text-Single JSONL + PNGs under ``out``. Returns ``out``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files = {name: [] for name in ("MM-Caption", "MM-Instruct", "MM-Percept", "Text-Single")}
    for i in range(n_images):
        modality, shape = rng.choice(MODALITIES), rng.choice(SHAPES)
        location = rng.choice(list(LOCATIONS))
        img, box = _draw(modality, shape, location, image_size, rng)
        rel = f"images/synthetic-{i:05d}.png"
        img.save(out / rel)
        split = "test" if rng.random() < heldout_fraction else "train"
        stem = f"2d#cls#{modality.lower()}#synthetic-shapes#{i:05d}"
        meta = {"split": split, "modality": modality, "source": "synthetic-shapes", "synthetic": True}
        caption = _caption(modality, shape, location, rng)
        if i < short_captions:
            caption = f"{modality}."  # too short: the Stage III quality filter must drop it
        files["MM-Caption"].append({"id": stem, "image": rel, "conversations": [
            {"from": "human", "value": "<image>\nDescribe this image."}, {"from": "gpt", "value": caption}], **meta})
        if long_reports and i % 4 == 0:
            report = (f"Findings: {caption} " + " ".join(
                f"Observation {k}: the {location} {shape} area measures about {rng.randint(5, 40)} mm."
                for k in range(rng.randint(2, 8)))) + " Impression: a solitary finding."
            files["MM-Caption"].append({"id": stem.replace("#cls#", "#report#"), "image": rel, "conversations": [
                {"from": "human", "value": "<image>\nWrite a report for this image."},
                {"from": "gpt", "value": report}], **meta})
        files["MM-Instruct"].append({"id": stem + "#qa", "image": rel, "conversations": [
            {"from": "human", "value": "<image>\nWhat imaging modality is this?"},
            {"from": "gpt", "value": f"This is a {modality} image."},
            {"from": "human", "value": "Where is the abnormal finding?"},
            {"from": "gpt", "value": f"The {shape} finding is in the {location} region."}], **meta})
        files["MM-Percept"].append({"id": stem.replace("#cls#", "#det#"), "image": rel, "conversations": [
            {"from": "human", "value": "<image>\nLocate the lesion."},
            {"from": "gpt", "value": f"This region <ref>lesion</ref><box>[{box}]</box> contains the {shape} "
                                     f"finding in the {location} area."}], **meta})
    for j in range(n_text):
        modality = MODALITIES[j % len(MODALITIES)]
        files["Text-Single"].append({"id": f"text#single#synthetic#{j:05d}", "split": "train", "conversations": [
            {"from": "human", "value": f"What does a {modality} image usually show?"},
            {"from": "gpt", "value": f"A {modality} image shows anatomy; a bright finding may be a lesion that "
                                     f"needs a description of its shape and location."}], "synthetic": True})
    for name, rows in files.items():
        with open(out / f"{name}.jsonl", "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    return out
