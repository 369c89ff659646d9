"""Writes ``vqa_rad_test_index.jsonl`` next to this file from the official VQA-RAD release (CC0 1.0).

    python -m gmai.eval.benchmarks.data.build_vqa_rad_index ../shared/data/vqa-rad

One line per test question, in qid order: ``qid``, ``image_name``, ``question``, ``answer``,
``answer_type`` (CLOSED / OPEN, the dataset's own label), ``question_type``, ``image_organ``, and two
fingerprints of the image (``image_sha256`` of the file's bytes; ``image_ahash``, a 64-bit average hash
of its 8x8 grey thumbnail, which survives re-encoding) so that copies that renamed the images (the
Hugging Face layout) map back onto the official qids.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

INDEX = Path(__file__).with_name("vqa_rad_test_index.jsonl")
FIELDS = ("qid", "image_name", "question", "answer", "answer_type", "question_type", "image_organ")


def average_hash(data: bytes) -> str:
    """64-bit average hash (8x8 grey thumbnail, bit set where a pixel is above the mean) as 16 hex digits."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        pixels = list(image.convert("L").resize((8, 8), Image.Resampling.BILINEAR).tobytes())
    mean = sum(pixels) / len(pixels)
    return f"{sum(1 << i for i, p in enumerate(pixels) if p > mean):016x}"


def build(release: Path) -> list[dict]:
    rows = json.loads((release / "testset.json").read_text(encoding="utf-8"))
    out = []
    for row in sorted(rows, key=lambda r: int(r["qid"])):
        data = (release / "images" / row["image_name"]).read_bytes()
        out.append({**{k: row[k] for k in FIELDS}, "image_sha256": hashlib.sha256(data).hexdigest(),
                    "image_ahash": average_hash(data)})
    return out


if __name__ == "__main__":
    entries = build(Path(sys.argv[1]))
    INDEX.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    print(f"wrote {len(entries)} entries to {INDEX}")
