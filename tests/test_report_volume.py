"""The demo report shows one held-out question asked about a volume read as slices: its slices side by side."""

import json

import numpy as np
from PIL import Image

from gmai.report import HEADLINE_RULE, volume_example


def test_volume_example_shows_the_slices_question_gold_and_prediction(tmp_path):
    paths = []
    for k in range(3):
        path = tmp_path / f"slice{k}.png"
        Image.fromarray(np.full((40, 40), 60 * k, np.uint8)).save(path)
        paths.append(str(path))
    rows = [{"qid": "2d#seg#ct#a#1", "images": [paths[0]], "question": "single?", "answer": "a", "prediction": "a",
             "verdicts": {HEADLINE_RULE: True}},
            {"qid": "3d#vol#ct#s#2", "images": paths, "question": "On which slice is the tumor largest?",
             "answer": "2", "prediction": "Slice 3.", "verdicts": {HEADLINE_RULE: False}}]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    section = volume_example(predictions, tmp_path / "examples")
    assert section["title"].startswith("5b. A volume read as 3 slices")
    assert "tumor largest" in section["text"] and "**gold:** 2" in section["text"] and "(wrong" in section["text"]
    with Image.open(section["image"]) as montage:
        assert montage.size == (3 * 40 + 2 * 4, 40)
        strip = np.asarray(montage.convert("L"), dtype=int)
    assert abs(strip[20, 100] - 120) < 8 and strip[20, 10] < 8  # the third slice on the right, the first on the left
    predictions.write_text(json.dumps(rows[0]) + "\n")
    assert volume_example(predictions, tmp_path / "examples") is None
