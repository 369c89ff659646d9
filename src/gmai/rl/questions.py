"""Verifiable reasoning questions, like GMAI-Reasoning10K, built from dataset metadata.

Inputs: a data-engine output folder (``<Subset>.jsonl`` + ``images/``; records carry ``source``,
``modality``, ``split`` and, where the source had them, ``labels``/``label_set``, ``boxes``,
``answer``/``answer_type``/``options``), or a benchmark's training split (VQA-RAD's
``trainset.json``). Each image yields a few questions whose answer a rule can check:

- ``choice``: single-answer multiple choice; distractors from the dataset's label set (or, for the
  modality question, from the modalities present in the corpus);
- ``closed``: yes/no ("Does this image show X?"), half of them with a distractor (gold "no");
- ``open``: short free-text answers (benchmark questions, the label);
- ``box``: grounding, gold ``[x1,y1,x2,y2]`` normalised.

Two variants are written, as in the paper: the RL variant (short answer) and the SFT variant
(step-by-step reasoning + final answer in ``<think>...</think><answer>...</answer>``). The SFT
variant's reasoning is *written by a template from the label* (``chain_source: "template"``),
not by a model: it teaches the output format, and says so in every record.

Every JSONL written here has its ``image`` relative to the file's own folder (images are
symlinked into ``OUT/images/``), the layout ``gmai train --data`` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gmai.data.write import write_jsonl  # the atomic writer, one for the project
from gmai.eval.benchmarks.base import jsonl_rows
from gmai.rl.rewards import parse_box

R1_INSTRUCTION = ("First think step by step inside <think> </think> tags, then give the final answer "
                  "inside <answer> </answer> tags.")
ANSWER_HINTS = {
    "choice": "Answer with the option's letter.",
    "closed": "Answer yes or no.",
    "open": "Answer with a short phrase.",
    "numeric": "Answer with a number.",
    "box": "Answer with the bounding box [x1,y1,x2,y2] in normalised coordinates.",
}
RL_FILE, SFT_FILE, HELDOUT_FILE = "questions.jsonl", "R1-SFT.jsonl", "questions-heldout.jsonl"
SFT_POOL_FILE = "questions-sft.jsonl"  # RL-variant rows of the questions the SFT round is about (synthesis input)
SUBSET_FILES = ("MM-Instruct.jsonl", "MM-Percept.jsonl", "MM-Caption.jsonl")
LETTERS = "ABCDEFGH"


@dataclass
class Question:
    """One verifiable question. ``answer`` is the letter for ``choice`` questions."""

    id: str
    image: str  # absolute path while building; relative to the written file's folder on disk
    question: str  # the question itself, without options or instructions
    answer: str
    answer_type: str  # choice | closed | open | numeric | box
    question_type: str  # label | modality | organ | presence | grounding | vqa
    source: str = ""
    modality: str = ""
    split: str = "train"
    options: list[str] = field(default_factory=list)  # option texts in letter order (choice only)
    tolerance: float | None = None  # numeric only (relative)
    reasoning: str = ""  # SFT variant: the template chain + final answer
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt(self, reasoning: bool = True) -> str:
        """The user's text: question, lettered options, answer hint, and the R1 format instruction."""
        lines = [self.question]
        lines += [f"{LETTERS[i]}. {text}" for i, text in enumerate(self.options)]
        lines.append(ANSWER_HINTS.get(self.answer_type, ""))
        if reasoning:
            lines.append(R1_INSTRUCTION)
        return "\n".join(line for line in lines if line)

    def gold_text(self) -> str:
        """The gold answer in words (the option's text for choice questions)."""
        if self.answer_type == "choice":
            return self.options[LETTERS.index(self.answer)]
        return self.answer

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "Question":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in row.items() if k in names})


# ---------------------------------------------------------------------------------------------
# Reading inputs
# ---------------------------------------------------------------------------------------------


def _field(row: dict[str, Any], key: str, default: Any = None) -> Any:
    """Metadata may sit at the top level of a line or under ``meta`` / ``metadata``."""
    for holder in (row, row.get("meta") or {}, row.get("metadata") or {}):
        if isinstance(holder, dict) and holder.get(key) not in (None, "", []):
            return holder[key]
    return default


def _resolve_image(base: Path, image: str, where: str) -> str:
    path = Path(image) if os.path.isabs(image) else base / image
    if not path.exists():
        raise FileNotFoundError(f"{where}: image {image!r} not found (looked at {path})")
    return str(path.resolve())


_BOX_IN_TEXT = re.compile(r"<ref>(?P<label>[^<]+)</ref>\s*<box>\[\[?(?P<coords>[-\d.,\s]+)\]\]?</box>")


def _boxes_of(row: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """(label, [x1,y1,x2,y2]) pairs from ``boxes`` metadata, else from ``<ref>..</ref><box>`` text."""
    out = []
    for box in _field(row, "boxes", []) or []:
        if isinstance(box, dict) and all(k in box for k in ("x1", "y1", "x2", "y2")):
            out.append((str(box.get("label", "")), [float(box[k]) for k in ("x1", "y1", "x2", "y2")]))
    if out:
        return out
    for turn in row.get("conversations", []):
        for m in _BOX_IN_TEXT.finditer(turn.get("value", "")):
            coords = [float(v) for v in m.group("coords").replace(" ", "").split(",") if v][:4]
            if len(coords) == 4:
                out.append((m.group("label").strip(), coords))
    return out


_LISTED_OPTION = re.compile(r"^\s*\(?[A-H][\.\):]\s+\S")


def _single_turn_qa(row: dict[str, Any]) -> tuple[str, str] | None:
    """(question, reply) of a one-turn Q&A line; listed options and answer-format hints are cut from
    the question (the R1 prompt lists the options and hints itself)."""
    conv = row.get("conversations", [])
    if len(conv) != 2 or conv[0].get("from") != "human":
        return None
    lines = conv[0]["value"].replace("<image>", "").strip().splitlines()
    kept = [ln for ln in lines if not _LISTED_OPTION.match(ln) and not ln.strip().lower().startswith("answer with")]
    return " ".join(ln.strip() for ln in kept if ln.strip()), conv[1]["value"].strip()


@dataclass
class ImageFacts:
    """What the metadata says about one image, merged over all lines that mention it."""

    image: str
    source: str
    modality: str
    split: str
    organ: str = ""
    labels: list[str] = field(default_factory=list)
    label_set: list[str] = field(default_factory=list)
    boxes: list[tuple[str, list[float]]] = field(default_factory=list)
    qa: list[dict[str, Any]] = field(default_factory=list)  # verifiable Q&A the data engine already wrote


def _label_text(label: str) -> str:
    return " ".join(str(label).replace("_", " ").split())


def collect_data_engine(folder: Path) -> list[ImageFacts]:
    """Merge every image-bearing line of ``folder/<Subset>.jsonl`` into per-image facts."""
    files = [folder / name for name in SUBSET_FILES if (folder / name).exists()]
    if not files:
        raise FileNotFoundError(f"{folder}: no data-engine output ({', '.join(SUBSET_FILES)}) found")
    # The engine writes val/test records under heldout/<split>/ (image paths relative to the top folder).
    files += sorted(p for name in SUBSET_FILES for p in folder.glob(f"heldout/*/{name}"))
    facts: dict[str, ImageFacts] = {}
    for path in files:
        for n, row in jsonl_rows(path):
            if not row.get("image") or isinstance(row["image"], list):
                continue  # text-only dialogue, or several images (a volume as slices): not one image's facts
            base = folder if (folder / row["image"]).exists() else path.parent
            image = _resolve_image(base, row["image"], f"{path}:{n}")
            f = facts.get(image)
            if f is None:
                f = facts[image] = ImageFacts(image, str(_field(row, "source", "unknown")),
                                              str(_field(row, "modality", "")), str(_field(row, "split", "train")),
                                              organ=str(_field(row, "organ", "")))
            for label in _field(row, "labels", []) or []:
                if _label_text(label) not in f.labels:
                    f.labels.append(_label_text(label))
            for label in _field(row, "label_set", []) or []:
                if _label_text(label) not in f.label_set:
                    f.label_set.append(_label_text(label))
            if not f.boxes:
                f.boxes = _boxes_of(row)
            qa = _single_turn_qa(row)
            kind = _field(row, "answer_type", "")
            # A grounding answer ("<box>[[...]]</box>") is no short text: the record's boxes give the box
            # question instead, scored by IoU rather than by string match.
            if qa and kind in ("closed", "open", "choice") and _field(row, "answer") and \
                    parse_box(str(_field(row, "answer"))) is None:
                f.qa.append({"question": qa[0], "answer": str(_field(row, "answer")), "answer_type": kind,
                             "options": list(_field(row, "options", []) or [])})
    _fill_label_sets(list(facts.values()))
    return list(facts.values())


def _fill_label_sets(facts: list[ImageFacts]) -> None:
    """Lines that carry ``labels`` but no ``label_set``: the vocabulary is the labels seen in the same source."""
    vocab: dict[str, set[str]] = {}
    for f in facts:
        vocab.setdefault(f.source, set()).update(f.labels)
    for f in facts:
        if f.labels and not f.label_set:
            f.label_set = sorted(vocab[f.source])


def collect_vqa_rad(folder: Path, split: str = "train") -> list[ImageFacts]:
    """VQA-RAD's ``trainset.json`` / ``testset.json`` -> per-image facts holding its Q&A pairs."""
    path = folder / ("trainset.json" if split == "train" else "testset.json")
    if not path.exists():
        raise FileNotFoundError(f"{path}: VQA-RAD split file not found")
    facts: dict[str, ImageFacts] = {}
    for i, item in enumerate(json.loads(path.read_text())):
        image = _resolve_image(folder / "images", item["image_name"], f"{path}[{i}]")
        f = facts.setdefault(image, ImageFacts(image, "vqa-rad", "radiology", split,
                                               organ=str(item.get("image_organ", "")).lower()))
        kind = "closed" if str(item.get("answer_type", "")).upper() == "CLOSED" else "open"
        f.qa.append({"question": item["question"].strip(), "answer": str(item["answer"]).strip(),
                     "answer_type": kind, "options": [], "question_type": str(item.get("question_type", "vqa"))})
    return list(facts.values())


def collect(input_path: str | Path, split: str = "train") -> list[ImageFacts]:
    """A data-engine folder or a VQA-RAD folder (detected by its ``trainset.json``)."""
    folder = Path(input_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder (expected data-engine output or a benchmark split)")
    if (folder / "trainset.json").exists():
        return collect_vqa_rad(folder, split)
    return collect_data_engine(folder)


# ---------------------------------------------------------------------------------------------
# Building questions
# ---------------------------------------------------------------------------------------------


def _qid(facts: ImageFacts, kind: str, n: int = 0) -> str:
    digest = hashlib.sha1(facts.image.encode()).hexdigest()[:10]
    return f"r1#{facts.source}#{facts.modality or 'na'}#{kind}#{digest}#{n}"


def _choice(facts: ImageFacts, qtype: str, question: str, gold: str, pool: Iterable[str], rng: random.Random,
            n_options: int) -> Question | None:
    distractors = sorted({p for p in pool if p and p.lower() != gold.lower()})
    if not distractors:
        return None  # a one-label dataset cannot make a multiple-choice question
    options = rng.sample(distractors, min(n_options - 1, len(distractors))) + [gold]
    rng.shuffle(options)
    return Question(_qid(facts, f"choice-{qtype}"), facts.image, question, LETTERS[options.index(gold)], "choice",
                    qtype, facts.source, facts.modality, facts.split, options=options)


def _presence(facts: ImageFacts, label: str, pool: list[str], rng: random.Random) -> Question:
    others = sorted({p for p in pool if p.lower() != label.lower()} - set(facts.labels))
    ask_negative = bool(others) and rng.random() < 0.5
    asked = rng.choice(others) if ask_negative else label
    return Question(_qid(facts, "closed-presence"), facts.image, f"Does this image show {asked}?",
                    "no" if ask_negative else "yes", "closed", "presence", facts.source, facts.modality,
                    facts.split, meta={"asked": asked, "shown": label})


def questions_for(facts: ImageFacts, modalities: list[str], rng: random.Random, n_options: int = 4,
                  kinds: tuple[str, ...] = ("choice", "closed", "open", "box")) -> list[Question]:
    """The verifiable questions one image supports (single-label facts only for label questions)."""
    out: list[Question] = []
    if len(facts.labels) == 1:
        label = facts.labels[0]
        if "choice" in kinds:
            q = _choice(facts, "label", "Which finding does this image show?", label, facts.label_set, rng, n_options)
            out += [q] if q else []
        if "closed" in kinds and len(facts.label_set) > 1:
            out.append(_presence(facts, label, facts.label_set, rng))
        if "open" in kinds:
            out.append(Question(_qid(facts, "open-label"), facts.image, "What is the main finding in this image?",
                                label, "open", "label", facts.source, facts.modality, facts.split))
    if facts.modality and "choice" in kinds:
        q = _choice(facts, "modality", "Which imaging modality is this?", facts.modality, modalities, rng, n_options)
        out += [q] if q else []
    if facts.boxes and "box" in kinds:
        label, coords = facts.boxes[0]
        out.append(Question(_qid(facts, "box"), facts.image, f"Where is the {label or 'finding'} in this image?",
                            "[" + ",".join(f"{v:.3f}" for v in coords) + "]", "box", "grounding", facts.source,
                            facts.modality, facts.split, meta={"label": label}))
    for i, qa in enumerate(facts.qa):
        if qa["answer_type"] in kinds or (qa["answer_type"] == "closed" and "closed" in kinds):
            options = [re.sub(r"^[A-H][\.\)]\s*", "", o) for o in qa.get("options", [])]
            out.append(Question(_qid(facts, f"vqa-{qa['answer_type']}", i), facts.image, qa["question"],
                                qa["answer"], qa["answer_type"], qa.get("question_type", "vqa"), facts.source,
                                facts.modality, facts.split, options=options))
    unique, seen = [], set()
    for q in out:  # the engine's own Q&A and ours may ask the same thing: keep the first
        key = (q.answer_type, q.question_type if q.answer_type == "choice" else "", q.gold_text().lower())
        if key not in seen:
            seen.add(key)
            q.reasoning = template_chain(q, facts)
            unique.append(q)
    return unique


# ---------------------------------------------------------------------------------------------
# SFT variant: template reasoning written from the label (not from a model)
# ---------------------------------------------------------------------------------------------


def _article(word: str) -> str:
    """'an' before a vowel sound, including letter names read with one ("an MR", "an X-ray")."""
    if word[:1].isupper() and (len(word) == 1 or word[1:2].isupper() or word[1:2] == "-"):
        return "an" if word[0] in "AEFHILMNORSX" else "a"
    return "an" if word[:1].lower() in "aeiou" else "a"


def template_chain(q: Question, facts: ImageFacts) -> str:
    """Step-by-step reasoning + final answer, written from the annotation.

    Honest about what it is: a scaffold that teaches the ``<think>/<answer>`` format and a
    reasoning order (modality -> finding -> option elimination -> answer); the words come from
    the label, not from looking at pixels.
    """
    seen = f"This is {_article(facts.modality)} {facts.modality} image" if facts.modality else "This is a medical image"
    if facts.organ:
        seen += f" of the {facts.organ}"
    steps = [seen + "."]
    gold = q.gold_text()
    if q.answer_type == "choice":
        steps.append(f"It is consistent with {gold}, not the other options.")
        steps.append(f"So the answer is {q.answer}.")
    elif q.answer_type == "closed" and q.question_type == "presence":
        asked, shown = q.meta["asked"], q.meta["shown"]
        steps.append(f"The finding here is {shown}" + ("." if asked == shown else f", not {asked}."))
        steps.append(f"So the answer is {q.answer}.")
    elif q.answer_type == "box":
        steps.append(f"The {q.meta.get('label') or 'finding'} stands out from its surroundings; its box is {q.answer}.")
    else:
        steps.append(f"Looking at the image, the answer is {gold}.")
    return f"<think>{' '.join(steps)}</think><answer>{q.answer}</answer>"


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def link_image(image: str, out: Path) -> str:
    """Symlink ``image`` into ``out/images/`` (never copy: benchmark data stays where it is) and
    return the path relative to ``out``."""
    src = Path(image).resolve()
    name = f"{hashlib.sha1(str(src).encode()).hexdigest()[:10]}-{src.name}"
    dest = out / "images" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        try:
            dest.symlink_to(src)
        except FileExistsError:
            pass  # written concurrently by another question on the same image
    return f"images/{name}"


def llava_row(q: Question, reply: str, out: Path, reasoning_prompt: bool = True, **extra: Any) -> dict[str, Any]:
    """One line in the trainer's LLaVA format, keeping the question's fields as metadata."""
    row = q.to_json()
    row.update(extra)
    row["image"] = link_image(q.image, out)
    row["conversations"] = [{"from": "human", "value": "<image>\n" + q.prompt(reasoning=reasoning_prompt)},
                            {"from": "gpt", "value": reply}]
    return row


def load_questions(path: str | Path) -> list[Question]:
    """Questions written by :func:`build_questions` (image paths resolved against the file's folder)."""
    path = Path(path)
    out = []
    for n, row in jsonl_rows(path):
        missing = [k for k in ("id", "image", "question", "answer", "answer_type") if k not in row]
        if missing:
            raise ValueError(f"{path}:{n}: question lacks {missing}")
        q = Question.from_json(row)
        q.image = _resolve_image(path.parent, q.image, f"{path}:{n}")
        out.append(q)
    return out


def matches(q: Question, selectors: dict[str, list[str]]) -> bool:
    """``{"modality": ["CT"], "source": ["vqa-rad"]}``: any listed value of any field matches."""
    return any(str(getattr(q, key, "")).lower() in {v.lower() for v in values} for key, values in selectors.items())


def _split_sft_rl(train: list[Question], rng: random.Random, max_questions: int, sft_questions: int,
                  rl_kinds: tuple[str, ...] | None) -> tuple[list[Question], list[Question]]:
    """(SFT pool, GRPO questions); the same list twice when ``sft_questions`` is 0."""
    if rl_kinds is None:
        if max_questions and len(train) > max_questions:
            train = rng.sample(train, max_questions)
        pool, rl = (train[:sft_questions], train[sft_questions:]) if sft_questions else (train, train)
    else:
        order = rng.sample(train, len(train))
        pool = order[:sft_questions]
        rl = [q for q in order[len(pool):] if q.answer_type in rl_kinds]
        rl = rl[:max(max_questions - len(pool), 0)] if max_questions else rl
        pool = pool if sft_questions else rl
    if not rl:
        raise ValueError(f"sft_questions={sft_questions} leaves no GRPO questions: {len(train)} training questions, "
                         f"GRPO kinds {rl_kinds or 'all'} (raise max_questions, lower sft_questions or widen rl_kinds)")
    return pool, rl


def build_questions(input_path: str | Path, out: str | Path, *, split: str = "train", seed: int = 0,
                    max_questions: int = 0, n_options: int = 4, kinds: tuple[str, ...] = ("choice", "closed", "open", "box"),
                    hold_out: dict[str, list[str]] | None = None, include_splits: tuple[str, ...] = ("train",),
                    sft_questions: int = 0, rl_kinds: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Write ``OUT/questions.jsonl`` (RL variant: the GRPO questions), ``OUT/questions-sft.jsonl`` (RL variant
    of the questions the SFT round synthesises chains for) and ``OUT/R1-SFT.jsonl`` (their template SFT
    variant, trainer format), ``OUT/questions-heldout.jsonl`` (questions matching ``hold_out`` or from another
    split: never used for training, only for evaluation) and return counts.

    ``sft_questions=N > 0`` gives SFT its own N questions and GRPO the rest (``max_questions`` caps the
    total), so GRPO is rewarded on questions SFT never memorised; 0 = both use the same questions.

    ``rl_kinds`` restricts GRPO's questions to those answer types (e.g. ``("choice",)``: GMAI-Reasoning10K is all
    single-answer multiple choice) while SFT keeps every kind. An open question that every sample gets wrong
    gives GRPO's group-relative advantage nothing to learn from."""
    out = Path(out)
    rng = random.Random(seed)
    facts = collect(input_path, split)
    modalities = sorted({f.modality for f in facts if f.modality})
    questions = [q for f in facts for q in questions_for(f, modalities, rng, n_options, kinds)]
    hold_out = hold_out or {}
    is_train = [q.split in include_splits and not matches(q, hold_out) for q in questions]
    train = [q for q, t in zip(questions, is_train) if t]
    held = [q for q, t in zip(questions, is_train) if not t]
    sft_pool, train = _split_sft_rl(train, rng, max_questions, sft_questions, rl_kinds)
    write_jsonl(out / RL_FILE, [llava_row(q, q.answer, out, reasoning_prompt=True) for q in train])
    write_jsonl(out / SFT_POOL_FILE, [llava_row(q, q.answer, out, reasoning_prompt=True) for q in sft_pool])
    write_jsonl(out / SFT_FILE, [llava_row(q, q.reasoning, out, chain_source="template") for q in sft_pool])
    write_jsonl(out / HELDOUT_FILE, [llava_row(q, q.answer, out) for q in held])
    summary = {"images": len(facts), "questions": len(train), "sft_questions": len(sft_pool),
               "sft_separate": bool(sft_questions), "heldout": len(held),
               "by_type": dict(Counter(q.answer_type for q in train)),
               "by_modality": dict(Counter(q.modality for q in train)),
               "by_source": dict(Counter(q.source for q in train)),
               "heldout_by_modality": dict(Counter(q.modality for q in held)),
               "files": {"rl": str(out / RL_FILE), "sft_pool": str(out / SFT_POOL_FILE), "sft": str(out / SFT_FILE),
                         "heldout": str(out / HELDOUT_FILE)},
               "sft_chains": "template (written from the label, not by a model)"}
    (out / "questions-summary.json").write_text(json.dumps(summary, indent=2))
    return summary
