"""OmniMedVQA (Hu et al. 2024) as released (Hugging Face ``foreverbeliever/OmniMedVQA``, ``OmniMedVQA.zip``):
``QA_information/{Open-access,Restricted-access}/<dataset>.json`` and ``Images/``. The split names are
the two halves' folder names, plus ``all`` for both (88,996 + 38,999 = 127,995 questions). Restricted-
access images are not distributed: fetch them from their sources and put them at each row's
``image_path``; an absent image is a failed item, never a skipped one.

Rows: ``{dataset, question_id, question_type, question, gt_answer, image_path, option_A..option_D,
modality_type}``; the gold letter is the option whose text is ``gt_answer``. A row where that matches
no option, or several, is listed in ``failures`` with the reason and the benchmark goes on.
"""

from __future__ import annotations

from pathlib import Path

from gmai.eval.benchmarks.base import BenchItem, ImageRef, Loaded, load_json, missing, register, require_dir
from gmai.eval.scoring import normalize_text

NAME = "omnimedvqa"
HALVES = ("Open-access", "Restricted-access")


@register(NAME, "OmniMedVQA multiple choice over 73 datasets (split Open-access by default, Restricted-access, all)",
          fetch="Fetch OmniMedVQA (Hugging Face foreverbeliever/OmniMedVQA, OmniMedVQA.zip: QA_information/ and "
                "Images/) and pass the folder that holds both.",
          splits=(*HALVES, "all"))
def load(path: str | Path, split: str = "Open-access") -> Loaded:
    root = require_dir(NAME, path)
    if not (root / "QA_information").is_dir() and (root / "OmniMedVQA" / "QA_information").is_dir():
        root = root / "OmniMedVQA"  # the zip's top folder
    halves = HALVES if split == "all" else (split,)
    items = Loaded()
    for half in halves:
        files = sorted((root / "QA_information" / half).glob("*.json"))
        if not files:
            raise missing(NAME, root, f"QA_information/{half}/*.json")
        for f in files:
            for row in load_json(f, NAME):
                _add(items, row, f, root, split)
    return items


def gold_letter(gt_answer: str, options: dict[str, str]) -> tuple[str | None, str]:
    """(letter, "") for the one option whose text is the gold, else (None, why)."""
    exact = [k for k, v in options.items() if v.strip() == str(gt_answer).strip()]
    if len(exact) == 1:
        return exact[0], ""
    loose = [k for k, v in options.items() if normalize_text(v) == normalize_text(str(gt_answer))]
    if len(loose) == 1:
        return loose[0], ""
    return None, f"gt_answer {gt_answer!r} matches {len(loose)} of the options {options}"


def _add(items: Loaded, row: dict, source: Path, root: Path, split: str) -> None:
    qid = str(row.get("question_id", f"{source.stem}-{len(items) + len(items.failures)}"))
    options = {k[-1]: str(row[k]).strip() for k in sorted(row) if k.startswith("option_") and row[k] is not None
               and str(row[k]).strip()}
    letter, why = gold_letter(row.get("gt_answer", ""), options)
    if letter is None:
        items.fail(qid, f"{source.name}: {why}")
        return
    items.append(BenchItem(
        qid=qid, question=str(row["question"]).strip(), answer=letter, answer_type="choice", options=options,
        images=[ImageRef(path=str(root / row["image_path"]), name=row["image_path"])],
        benchmark=NAME, split=split, modality=str(row.get("modality_type", row.get("modality", ""))),
        question_type=str(row.get("question_type", "")), meta={"dataset": row.get("dataset", source.stem)}))
