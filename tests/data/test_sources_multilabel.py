"""Multi-label tables in CheXpert's convention (1 positive, 0 negative, -1 uncertain, blank unmentioned).

The fixture reproduces CheXpert-v1.0-small's ``train.csv``: its header (Path, Sex, Age, Frontal/Lateral,
AP/PA and the 14 observation columns in the released order), paths relative to the folder that holds
``CheXpert-v1.0-small/``, and cells written as ``1.0`` / ``0.0`` / ``-1.0`` / empty. Sources: Irvin et al.,
"CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert Comparison" (AAAI 2019,
arXiv:1901.07031) for the convention and the U-Ignore / U-Ones / U-Zeros policies; the column list as
public code reads it, e.g. github.com/Telchar22/AI-Chexpert Settings/settings.py (CLASSES), and the first
row of train.csv as quoted in public code:
``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gmai.data.generate.templates import TemplateGenerator
from gmai.data.records import Record, Reject
from gmai.data.sources import get_source
from gmai.data.sources._common import OptionError

FINDINGS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
            "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
            "Fracture", "Support Devices"]
HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(FINDINGS)
ROWS = [
    "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
    "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,",
    "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,",
    "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,41,Frontal,AP,,,,,,1.0,,,,0.0,,,,",
    "CheXpert-v1.0-small/train/patient00004/study1/view1_frontal.jpg,Female,20,Frontal,PA,1.0,0.0,,,,,,,,,0.0,,,",
    "CheXpert-v1.0-small/train/patient00004/study1/view2_lateral.jpg,Female,20,Lateral,,1.0,0.0,,,,,,,,,0.0,,,",
    "CheXpert-v1.0-small/train/patient00005/study1/view1_frontal.jpg,Male,33,Frontal,PA,1.0,,0.0,,,,,,,,,,,1.0",
    "CheXpert-v1.0-small/train/patient00005/study2/view1_frontal.jpg,Male,33,Frontal,AP,,,,1.0,,,,,,0.0,,,,1.0",
    "CheXpert-v1.0-small/train/patient00006/study1/view1_frontal.jpg,Female,42,Frontal,AP,,-1.0,0.0,,,-1.0,,-1.0,,0.0,-1.0,,,",
    "CheXpert-v1.0-small/train/patient00007/study1/view1_frontal.jpg,Male,65,Frontal,AP,,,-1.0,,,,,,,,,,,",
]
POLICIES = [(u, b) for u in ("ignore", "positive", "negative") for b in ("negative", "ignore")]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chexpert")
    rng = np.random.default_rng(0)
    for row in ROWS:
        image = root / row.split(",")[0]
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(image, quality=90)
    csv = root / "CheXpert-v1.0-small" / "train.csv"
    csv.write_text(HEADER + "\n" + "\n".join(ROWS) + "\n")
    return csv


def load(csv: Path, uncertain: str, blank: str) -> tuple[list[Record], list[Reject]]:
    options = {"label_columns": ",".join(FINDINGS), "uncertain": uncertain, "blank": blank,
               "root": str(csv.parent.parent), "modality": "X-ray", "name": "chexpert"}
    source = get_source("csv")
    out = [o for item in source.items(csv, options) for o in source.load(csv, item, options)]
    return [o for o in out if isinstance(o, Record)], [o for o in out if isinstance(o, Reject)]


def raw_states(record: Record) -> dict[str, str]:
    row = next(r for r in ROWS if record.ref.endswith(r.split(",")[0]))
    cells = row.split(",")[5:]
    return {name: {"1.0": "positive", "0.0": "negative", "-1.0": "uncertain", "": "blank"}[cell]
            for name, cell in zip(FINDINGS, cells, strict=True)}


def named(text: str) -> list[str]:
    """Findings named in a text, longest names first so 'Pleural Other' is not read as 'Pleural'."""
    found = []
    for name in sorted(FINDINGS[1:], key=len, reverse=True):
        if re.search(re.escape(name), text):
            found.append(name)
            text = text.replace(name, "")
    return found


@pytest.mark.parametrize(("uncertain", "blank"), POLICIES)
def test_no_uncertain_finding_is_a_negative_answer_or_a_distractor(table, uncertain, blank):
    records, _ = load(table, uncertain, blank)
    generator = TemplateGenerator()
    asked = {"yes": set(), "no": set(), "distractor": set()}
    for record in records:
        states = raw_states(record)
        allowed_negative = {n for n, s in states.items() if s == "negative" or (s == "blank" and blank == "negative")}
        for seed in range(40):  # many draws: every phrasing and every candidate of each record
            for sample in generator.generate(record, random.Random(seed)):
                question = sample.conversations[0]["value"]
                if sample.format == "qa_yesno" and sample.question_type == "finding":
                    (candidate,) = named(question)
                    asked[sample.answer].add((record.ref, candidate))
                    if sample.answer == "no":
                        assert candidate in allowed_negative, (record.ref, candidate, states[candidate])
                    else:
                        assert states[candidate] == "positive" or (states[candidate] == "uncertain"
                                                                    and uncertain == "positive")
                if sample.format == "qa_choice":
                    options = [o.split(". ", 1)[1] for o in sample.options]
                    right = options["ABCD".index(sample.answer)]
                    for option in options:
                        if option != right:
                            assert option in allowed_negative, (record.ref, option, states[option])
                            asked["distractor"].add((record.ref, option))
                if sample.format == "qa_findings":
                    listed = named(sample.answer)
                    assert all(states[n] == "positive" or uncertain == "positive" for n in listed)
                    assert uncertain == "positive" or not any(s == "uncertain" for s in states.values())
                    assert blank == "negative" or not any(s == "blank" for n, s in states.items() if n != "No Finding")
    assert asked["no"] and asked["distractor"] and asked["yes"]  # the checks above did run
    uncertain_pairs = {(r.ref, n) for r in records for n, s in raw_states(r).items() if s == "uncertain"}
    assert not uncertain_pairs & (asked["no"] | asked["distractor"])
    # U-Ones turns uncertain findings into "yes" answers; the other policies never ask about them
    assert bool(uncertain_pairs & asked["yes"]) == (uncertain == "positive")


def test_policies_set_the_label_vector_and_labels(table):
    by_policy = {policy: load(table, *policy)[0] for policy in POLICIES}
    second = {p: next(r for r in recs if "patient00002/study2" in r.ref) for p, recs in by_policy.items()}
    assert second[("ignore", "negative")].labels == ["Lung Opacity", "Fracture"]
    assert second[("ignore", "negative")].meta["findings"]["Cardiomegaly"] is None
    assert second[("negative", "negative")].meta["findings"]["Cardiomegaly"] == 0
    assert "Cardiomegaly" not in second[("negative", "negative")].meta["findings_negative"]  # U-Zeros: 0, never "no"
    assert second[("positive", "negative")].labels == ["Cardiomegaly", "Lung Opacity", "Edema", "Consolidation",
                                                      "Atelectasis", "Pleural Effusion", "Fracture"]
    first = next(r for r in by_policy[("ignore", "negative")] if "patient00001/" in r.ref)
    assert first.labels == ["Support Devices"] and first.meta["no_finding"] is True
    assert first.label_set == FINDINGS[1:]


def test_no_finding_questions(table):
    records, _ = load(table, "ignore", "negative")
    normal = next(r for r in records if "patient00004/study1/view1" in r.ref)
    assert normal.labels == ["No Finding"]
    samples = [s for seed in range(10) for s in TemplateGenerator().generate(normal, random.Random(seed))]
    assert {s.answer for s in samples if s.question_type == "no_finding"} == {"yes"}
    assert {s.answer for s in samples if s.format == "qa_findings"} == {"no finding"}
    ill = next(r for r in records if "patient00003" in r.ref)
    samples = [s for seed in range(10) for s in TemplateGenerator().generate(ill, random.Random(seed))]
    assert {s.answer for s in samples if s.format == "qa_findings"} == {"Edema"}


def test_only_uncertain_row_is_rejected_and_bad_options_fail_early(table):
    _, rejects = load(table, "ignore", "ignore")
    assert any("patient00007" in r.ref and "no finding stated positive or negative" in r.reason for r in rejects)
    records, _ = load(table, "positive", "ignore")
    assert any("patient00007" in r.ref and r.labels == ["Cardiomegaly"] for r in records)
    with pytest.raises(OptionError, match="uncertain='maybe'"):
        get_source("csv").items(table, {"label_columns": "Edema", "uncertain": "maybe"})
    with pytest.raises(OptionError, match="not columns of the table"):
        get_source("csv").items(table, {"label_columns": "Edema,Nodule"})
