"""Check generated text against its record: the paper's grounding rules, as code.

A sample passes when
- the true label is stated (or implied: "no evidence of lesion" implies the label "no lesion"),
- no other label of the dataset's label set is asserted (a negated mention such as "not malignant"
  is not an assertion; labels are matched longest first so "no lesion" is never read as "lesion"),
- yes/no answers agree with the record, multiple-choice letters point at the true label,
- every box in the text matches one of the record's boxes,
- region captions start with "This region", and nothing vague or textbook-general is said
  (a short list of phrases; a heuristic, not a judge).

``check_json`` is the JSON rule for LLM replies. All functions return a list of problems, empty
when the sample passes, so the statistics can count failures by kind.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gmai.data.generate import Sample
from gmai.data.generate.templates import label_text
from gmai.data.records import Box, Record

NEGATION_CUES = ("no", "not", "without", "absence of", "absent", "negative for", "rather than", "instead of",
                 "rule out", "ruled out", "unlikely", "free of", "nor", "neither", "isn't", "is not", "no evidence of")
NEGATED_LABEL_PREFIXES = ("no ", "non-", "non ", "not ", "without ")
VAGUE_PHRASES = ("may or may not", "cannot be determined", "it is unclear", "hard to say", "not sure",
                 "as an ai", "i cannot", "difficult to determine")
GENERAL_FACT_PHRASES = ("is a common", "is a type of", "is defined as", "is caused by", "in general,",
                        "generally,", "studies show", "is one of the most", "is a condition", "is a disease")
BOX_TOLERANCE = 0.02  # normalised units: boxes are written with 3 decimals; LLMs round further
_CLAUSE_BREAK = re.compile(r"[.,;:!?\n]")
_BOX_RE = re.compile(r"<box>\s*\[(.*?)\]\s*</box>", re.S)
_NUMBERS_RE = re.compile(r"\[\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*\]")
_REF_RE = re.compile(r"<ref>(.*?)</ref>", re.S)


# ------------------------------------------------------------------------------------------------
# Label mentions


def _pattern(label: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in label_text(label).lower().split()]
    return re.compile(r"(?<![\w-])" + r"[\s_-]+".join(words) + r"(?![\w-])")


def _is_negated(text: str, start: int) -> bool:
    """A negation cue within the same clause, at most four words before the mention."""
    before = text[:start]
    clause = _CLAUSE_BREAK.split(before)[-1].lower()
    words = clause.split()[-4:]
    window = " " + " ".join(words) + " "
    return any(f" {cue} " in window for cue in NEGATION_CUES)


def label_mentions(text: str, label_set: list[str]) -> list[tuple[str, bool]]:
    """(label, negated) for every mention of a label in ``text``, longest labels matched first."""
    lowered = text.lower()
    masked = lowered
    mentions: list[tuple[int, str, bool]] = []
    for label in sorted({label_text(x) for x in label_set if label_text(x)}, key=len, reverse=True):
        for match in _pattern(label).finditer(masked):
            mentions.append((match.start(), label, _is_negated(lowered, match.start())))
        masked = _pattern(label).sub(lambda m: "#" * len(m.group(0)), masked)
    return [(label, negated) for _, label, negated in sorted(mentions)]


def _implies(label: str, mentions: list[tuple[str, bool]]) -> bool:
    """'no lesion' is implied by a negated 'lesion'; any label by its own non-negated mention."""
    if any(m == label and not neg for m, neg in mentions):
        return True
    for prefix in NEGATED_LABEL_PREFIXES:
        if label.startswith(prefix):
            rest = label[len(prefix):].strip()
            return any(m == rest and neg for m, neg in mentions)
    return False


def _label_universe(record: Record) -> tuple[list[str], list[str]]:
    true = [label_text(x) for x in record.labels if label_text(x)]
    everything = sorted({label_text(x) for x in list(record.label_set) + list(record.labels) if label_text(x)})
    return true, everything


def check_statement(text: str, record: Record, must_state: bool) -> list[str]:
    """No other label asserted; with ``must_state`` every true label stated or implied."""
    true, everything = _label_universe(record)
    if not everything:
        return []
    mentions = label_mentions(text, everything)
    problems = [f"asserts other label {label!r}" for label, neg in mentions if label not in true and not neg]
    problems += [f"negates true label {label!r}" for label, neg in mentions if label in true and neg]
    if must_state:
        problems += [f"true label {label!r} not stated" for label in true if not _implies(label, mentions)]
    return sorted(set(problems))


# ------------------------------------------------------------------------------------------------
# Boxes


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """All boxes written as <box>[[x1,y1,x2,y2],...]</box>; 0-1000 integers are rescaled to [0, 1]."""
    boxes = []
    for inner in _BOX_RE.findall(text):
        for numbers in _NUMBERS_RE.findall("[" + inner + "]"):
            values = tuple(float(v) for v in numbers)
            if max(values) > 1.5:  # the 0-1000 convention of some models
                values = tuple(v / 1000 for v in values)
            boxes.append(values)  # type: ignore[arg-type]
    return boxes


def record_boxes(record: Record) -> list[Box]:
    return list(record.boxes) + [f.box for f in record.mask_facts]


def check_boxes(text: str, record: Record, extra: list[list[float]] | None = None) -> list[str]:
    found = parse_boxes(text) + [tuple(b) for b in (extra or []) if len(b) == 4]
    known = record_boxes(record)
    problems = []
    for box in found:
        if not any(all(abs(a - b) <= BOX_TOLERANCE for a, b in zip(box, (k.x1, k.y1, k.x2, k.y2))) for k in known):
            problems.append(f"box {list(box)} matches no annotated box")
    return problems


# ------------------------------------------------------------------------------------------------
# Samples


def _gpt_turns(sample: Sample) -> list[str]:
    return [t["value"] for t in sample.conversations if t.get("from") == "gpt"]


def _human_turns(sample: Sample) -> list[str]:
    return [t["value"] for t in sample.conversations if t.get("from") == "human"]


def check_style(text: str) -> list[str]:
    lowered = text.lower()
    problems = [f"vague phrase {p!r}" for p in VAGUE_PHRASES if p in lowered]
    problems += [f"general-knowledge phrase {p!r}" for p in GENERAL_FACT_PHRASES if p in lowered]
    if not text.strip():
        problems.append("empty answer")
    return problems


def check_yes_no(question: str, answer: str, record: Record) -> list[str]:
    """If the question names exactly one label and the answer is yes/no, it must agree with the record."""
    true, everything = _label_universe(record)
    head = answer.strip().lower()
    verdict = "yes" if head.startswith("yes") else "no" if head.startswith("no") else ""
    if not verdict or not everything:
        return []
    named = {label for label, neg in label_mentions(question, everything) if not neg}
    if len(named) != 1:
        return []
    (label,) = named
    expected = "yes" if label in true else "no"
    return [] if verdict == expected else [f"answers {verdict!r} about {label!r}, record says {expected!r}"]


def check_choice(sample: Sample, record: Record) -> list[str]:
    true, _ = _label_universe(record)
    letter = sample.answer.strip()[:1].upper()
    chosen = [opt for opt in sample.options if opt[:1].upper() == letter]
    if not chosen:
        return [f"answer letter {letter!r} is not an option"]
    text = chosen[0].split(".", 1)[-1].strip().lower()
    return [] if text in true else [f"option {chosen[0]!r} is not the true label"]


def verify_sample(sample: Sample, record: Record) -> list[str]:
    """Every problem of one sample; empty means it passes."""
    if sample.generator == "passthrough":
        return []  # dataset-provided text (VQA, LLaVA, reports): nothing of ours to check
    problems: list[str] = []
    text = "\n".join(t["value"] for t in sample.conversations)
    problems += check_boxes(text, record)
    for answer in _gpt_turns(sample):
        problems += check_style(answer)
        problems += check_statement(answer, record, must_state=False)
    for question, answer in zip(_human_turns(sample), _gpt_turns(sample)):
        problems += check_yes_no(question, answer, record)
    if sample.format == "caption" and record.labels:
        problems += check_statement(" ".join(_gpt_turns(sample)), record, must_state=True)
    if sample.format == "qa_open" and sample.question_type == "label":
        problems += check_statement(" ".join(_gpt_turns(sample)), record, must_state=True)
    if sample.format == "region_caption":
        problems += _check_region(sample, record)
    if sample.format == "qa_choice":
        problems += check_choice(sample, record)
    return sorted(set(problems))


def _check_region(sample: Sample, record: Record) -> list[str]:
    problems = []
    true, _ = _label_universe(record)
    for answer in _gpt_turns(sample):
        if not answer.strip().startswith("This region"):
            problems.append("region caption does not start with 'This region'")
        for ref in _REF_RE.findall(answer):
            if label_text(ref).lower() not in true:
                problems.append(f"<ref>{ref}</ref> is not an annotated label")
    return problems


# ------------------------------------------------------------------------------------------------
# LLM replies


def check_json(text: str) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse a model reply as one JSON object (a ```json fence is tolerated)."""
    body = text.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", body, re.S)
    if fence:
        body = fence.group(1)
    try:
        value = json.loads(body)
    except json.JSONDecodeError as error:
        return None, [f"reply is not JSON ({error.msg} at char {error.pos})"]
    if not isinstance(value, dict):
        return None, ["reply JSON is not an object"]
    return value, []
