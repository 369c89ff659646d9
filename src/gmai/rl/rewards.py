"""Verifiable rewards for GRPO: plain functions with TRL's reward signature.

Every reward is ``def reward(completions, **columns) -> list[float | None]``: ``completions`` are
strings or TRL conversational completions (``[{"role": "assistant", "content": ...}]``); the
question's dataset columns (``answer``, ``answer_type``, ``options``, ...) arrive as keyword
arguments, one value per completion. A reward returns ``None`` for a completion whose question it
does not apply to (TRL treats None as "not scored" and ignores it in the weighted sum), so the
type-specific accuracies can be combined freely.

One implementation, two uses: answer extraction and judging are :mod:`gmai.eval.scoring`'s
(``extract_answer``, ``judge``, ``token_f1``, ``normalize_text``, ``extract_choice``); a reward
scored 1.0 is a reply the evaluation suite counts correct under the same rule (``gmai@1``).
What is added here is only what RL needs beyond a verdict: partial credit (token F1, IoU), a
synonyms table for open answers, numeric tolerance and the format check.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gmai.eval import scoring

RewardFn = Callable[..., list[float | None]]
RULE = scoring.DEFAULT_RULE

# ---------------------------------------------------------------------------------------------
# Completions and columns
# ---------------------------------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """A TRL completion (string, or a list of chat messages) -> the assistant's text."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return completion_text(completion.get("content", ""))
    parts = []
    for item in completion:
        if isinstance(item, Mapping) and "content" in item:
            parts.append(completion_text(item["content"]))
        elif isinstance(item, Mapping) and item.get("type") == "text":
            parts.append(str(item.get("text", "")))
        elif isinstance(item, str):
            parts.append(item)
    return "".join(parts)


def _col(values: Sequence[Any] | None, n: int, name: str, default: Any = None) -> list[Any]:
    """One dataset column as a list of ``n`` values (``default`` when the column is absent)."""
    if values is None:
        return [default] * n
    if len(values) != n:
        raise ValueError(f"reward column {name!r} has {len(values)} values for {n} completions")
    return list(values)


def options_mapping(options: Any) -> dict[str, str]:
    """Options as stored in question files (a list of texts in letter order, "A. text" strings, or
    a letter->text mapping) -> ``{"A": text, ...}``."""
    if not options:
        return {}
    if isinstance(options, Mapping):
        return {str(k).upper(): str(v) for k, v in options.items() if v is not None}
    out = {}
    for i, text in enumerate(options):
        text = str(text)
        m = re.match(r"^\s*([A-Z])[\.\)]\s+(.*)$", text)
        if m and m.group(1) == chr(ord("A") + i):
            out[m.group(1)] = m.group(2)
        else:
            out[chr(ord("A") + i)] = text
    return out


# ---------------------------------------------------------------------------------------------
# Format: <think>...</think><answer>...</answer>, each once, in order, nothing after
# ---------------------------------------------------------------------------------------------

_FORMAT_RE = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.S)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def format_valid(text: str) -> bool:
    """The reply is exactly ``<think>non-empty</think><answer>non-empty</answer>`` (whitespace
    around the blocks allowed), each tag once, in order, no text outside the blocks."""
    text = completion_text(text)
    if any(text.count(tag) != 1 for tag in _TAGS):
        return False
    m = _FORMAT_RE.fullmatch(text)
    return bool(m and m.group("think").strip() and m.group("answer").strip())


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 when :func:`format_valid`, else 0.0."""
    return [1.0 if format_valid(c) else 0.0 for c in completions]


def format_partial_score(text: str) -> float:
    """Shaped format credit for small models that have not learnt the format yet: 0.2 per tag that
    occurs exactly once, plus 0.2 when the whole reply is :func:`format_valid` (so 1.0 = strict)."""
    text = completion_text(text)
    score = 0.2 * sum(text.count(tag) == 1 for tag in _TAGS)
    return round(score + (0.2 if format_valid(text) else 0.0), 6)


def format_partial_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """:func:`format_partial_score` per completion."""
    return [format_partial_score(c) for c in completions]


# ---------------------------------------------------------------------------------------------
# Multiple choice and yes/no: the eval suite's verdicts
# ---------------------------------------------------------------------------------------------


def choice_reward(completions: Sequence[Any], answer: Sequence[str] | None = None,
                  options: Sequence[Any] | None = None, answer_type: Sequence[str] | None = None,
                  **kwargs: Any) -> list[float | None]:
    """1.0 when the picked option (``scoring.extract_choice``) is the gold one; None for non-choice rows."""
    n = len(completions)
    golds, opts = _col(answer, n, "answer"), _col(options, n, "options")
    types = _col(answer_type, n, "answer_type", "choice")
    out: list[float | None] = []
    for completion, gold, option_list, kind in zip(completions, golds, opts, types):
        if kind != "choice" or gold is None:
            out.append(None)
            continue
        verdict = scoring.judge(completion_text(completion), str(gold), "choice", options_mapping(option_list), RULE)
        out.append(1.0 if verdict and verdict.correct else 0.0)
    return out


def yes_no_reward(completions: Sequence[Any], answer: Sequence[str] | None = None,
                  answer_type: Sequence[str] | None = None, **kwargs: Any) -> list[float | None]:
    """1.0 when the reply's polarity (``scoring.polarity``: negations, hedges, uncertainty) matches
    a yes/no gold; None for rows whose gold is not yes/no."""
    n = len(completions)
    out: list[float | None] = []
    for completion, gold, kind in zip(completions, _col(answer, n, "answer"),
                                      _col(answer_type, n, "answer_type", "closed")):
        if gold is None or kind == "choice" or scoring.gold_polarity(str(gold)) is None:
            out.append(None)
            continue
        verdict = scoring.judge(completion_text(completion), str(gold), "closed", {}, RULE)
        out.append(1.0 if verdict.correct else 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# Open answers: normalised match (with medical synonyms), else token F1 as partial credit
# ---------------------------------------------------------------------------------------------

# Canonical name -> other ways of saying it (all compared after scoring.normalize_text).
MEDICAL_SYNONYMS: dict[str, list[str]] = {
    "mri": ["mr", "magnetic resonance imaging", "magnetic resonance", "mri scan", "mr scan", "mr image"],
    "ct": ["computed tomography", "ct scan", "cat scan", "computerized tomography", "ct image"],
    "x ray": ["xray", "radiograph", "plain film", "x ray image", "plain radiograph", "roentgenogram"],
    "ultrasound": ["us", "sonography", "ultrasonography", "sonogram", "ultrasound image"],
    "pet": ["positron emission tomography", "pet scan"],
    "fundus photograph": ["fundus", "fundus image", "fundus photo", "retinal photograph", "retina photograph"],
    "histopathology": ["pathology", "histology", "histopathology image", "pathology slide", "h e stain"],
    "endoscopy": ["endoscopic image", "endoscope image"],
    "dermoscopy": ["dermatoscopy", "dermoscopic image", "epiluminescence microscopy"],
    "oct": ["optical coherence tomography"],
    "mammography": ["mammogram"],
    "chest": ["thorax", "thoracic cavity", "lungs"],
    "abdomen": ["abdominal cavity", "abd", "belly"],
    "head": ["brain", "skull", "cranium"],
    "kidney": ["renal"],
    "liver": ["hepatic"],
    "lung": ["pulmonary"],
    "heart": ["cardiac"],
    "myocardial infarction": ["heart attack", "mi"],
    "pneumothorax": ["collapsed lung", "ptx"],
    "pleural effusion": ["effusion", "fluid in pleural space"],
    "hemorrhage": ["haemorrhage", "bleed", "bleeding"],
    "tumor": ["tumour", "neoplasm", "mass"],
    "edema": ["oedema"],
    "benign": ["non malignant", "noncancerous", "not malignant"],
    "malignant": ["cancerous", "malignancy", "cancer"],
    "normal": ["no abnormality", "unremarkable", "no finding", "no findings", "healthy"],
    "left": ["left side", "l"],
    "right": ["right side", "r"],
    "axial": ["transverse", "axial plane", "transverse plane"],
    "coronal": ["coronal plane", "frontal plane"],
    "sagittal": ["sagittal plane"],
}


def _build_synonym_index(table: Mapping[str, list[str]]) -> dict[str, str]:
    index = {}
    for canonical, others in table.items():
        key = scoring.normalize_text(canonical)
        index[key] = key
        for other in others:
            index.setdefault(scoring.normalize_text(other), key)
    return index


_SYNONYMS = _build_synonym_index(MEDICAL_SYNONYMS)


def canonical(text: str) -> str:
    """Normalised text (``scoring.normalize_text``) with a whole-answer synonym replaced by its
    canonical name ("magnetic resonance imaging" -> "mri")."""
    norm = scoring.normalize_text(text)
    return _SYNONYMS.get(norm, norm)


def open_answer_score(reply: str, gold: str) -> float:
    """1.0 for the eval suite's exact match or a synonym match of the extracted answer; otherwise
    the token F1 between the (synonym-canonicalised) answer and gold, as partial credit < 1."""
    span = scoring.extract_answer(reply, RULE)
    if scoring.exact_match(span, gold) or canonical(span) == canonical(gold):
        return 1.0
    f1 = max(scoring.token_f1(span, gold), scoring.token_f1(canonical(span), canonical(gold)))
    return min(f1, 0.99)  # only a match the eval suite would accept earns a full 1.0


def open_reward(completions: Sequence[Any], answer: Sequence[str] | None = None,
                answer_type: Sequence[str] | None = None, **kwargs: Any) -> list[float | None]:
    """:func:`open_answer_score` on open rows; None for choice, yes/no, numeric and box rows."""
    n = len(completions)
    out: list[float | None] = []
    for completion, gold, kind in zip(completions, _col(answer, n, "answer"),
                                      _col(answer_type, n, "answer_type", "open")):
        if gold is None or kind not in ("open", "closed") or scoring.gold_polarity(str(gold)) is not None:
            out.append(None)
            continue
        out.append(open_answer_score(completion_text(completion), str(gold)))
    return out


# ---------------------------------------------------------------------------------------------
# Numbers with tolerance
# ---------------------------------------------------------------------------------------------

_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_WORD_NUMBERS = {"zero": 0, "none": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                 "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}


def parse_number(text: str) -> float | None:
    """The first number in the extracted answer ("about 3.5 cm" -> 3.5, "two" -> 2), else None."""
    span = scoring.extract_answer(text, RULE)
    m = _NUMBER_RE.search(span)
    if m:
        try:
            return float(m.group(0).replace(",", "."))
        except ValueError:
            return None
    for word in scoring.tokens(span):
        if word in _WORD_NUMBERS:
            return float(_WORD_NUMBERS[word])
    return None


def numeric_score(reply: str, gold: str | float, rel_tol: float = 0.05, abs_tol: float = 0.0) -> float:
    """1.0 when the reply's number is within ``max(rel_tol * |gold|, abs_tol)`` of the gold, else 0.0."""
    pred = parse_number(reply)
    try:
        target = float(str(gold).replace(",", "."))
    except ValueError:
        target = parse_number(str(gold))
    if pred is None or target is None or math.isnan(pred):
        return 0.0
    return 1.0 if abs(pred - target) <= max(rel_tol * abs(target), abs_tol) + 1e-12 else 0.0


def numeric_reward(completions: Sequence[Any], answer: Sequence[str] | None = None,
                   answer_type: Sequence[str] | None = None, tolerance: Sequence[float] | None = None,
                   **kwargs: Any) -> list[float | None]:
    """:func:`numeric_score` on ``numeric`` rows (relative tolerance from a ``tolerance`` column,
    default 5%); None elsewhere."""
    n = len(completions)
    out: list[float | None] = []
    for completion, gold, kind, tol in zip(completions, _col(answer, n, "answer"),
                                           _col(answer_type, n, "answer_type", "numeric"),
                                           _col(tolerance, n, "tolerance", 0.05)):
        if kind != "numeric" or gold is None:
            out.append(None)
            continue
        out.append(numeric_score(completion_text(completion), str(gold), rel_tol=0.05 if tol is None else float(tol)))
    return out


# ---------------------------------------------------------------------------------------------
# Boxes: IoU
# ---------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\[\s*([-+\d.eE]+)\s*,\s*([-+\d.eE]+)\s*,\s*([-+\d.eE]+)\s*,\s*([-+\d.eE]+)\s*\]")


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first ``[x1,y1,x2,y2]`` in the extracted answer (``<box>[[...]]</box>`` too), else None.
    Corners are reordered so x1 <= x2 and y1 <= y2."""
    span = scoring.extract_answer(text, RULE) if "<answer>" in str(text) else str(text)
    m = _BOX_RE.search(span) or _BOX_RE.search(str(text))
    if not m:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in m.groups())
    except ValueError:
        return None
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_iou_reward(completions: Sequence[Any], answer: Sequence[str] | None = None,
                   answer_type: Sequence[str] | None = None, **kwargs: Any) -> list[float | None]:
    """IoU between the reply's box and the gold box on ``box`` rows (0 when no box is given)."""
    n = len(completions)
    out: list[float | None] = []
    for completion, gold, kind in zip(completions, _col(answer, n, "answer"),
                                      _col(answer_type, n, "answer_type", "box")):
        if kind != "box" or gold is None:
            out.append(None)
            continue
        gold_box, pred_box = parse_box(str(gold)), parse_box(completion_text(completion))
        if gold_box is None:
            raise ValueError(f"box question has an unparseable gold box {gold!r}")
        out.append(0.0 if pred_box is None else box_iou(pred_box, gold_box))
    return out


# ---------------------------------------------------------------------------------------------
# One accuracy over every question type, and the registry
# ---------------------------------------------------------------------------------------------

_BY_TYPE: dict[str, RewardFn] = {}


def accuracy_reward(completions: Sequence[Any], answer_type: Sequence[str] | None = None,
                    **kwargs: Any) -> list[float | None]:
    """Routes each row to its type's reward: choice, yes/no (closed with a yes/no gold), open,
    numeric, box. Use this single accuracy in mixed-type recipes."""
    n = len(completions)
    types = _col(answer_type, n, "answer_type", "open")
    out: list[float | None] = [None] * n
    for kind in set(types):
        idx = [i for i, t in enumerate(types) if t == kind]
        sub = {k: [v[i] for i in idx] for k, v in kwargs.items() if isinstance(v, (list, tuple)) and len(v) == n}
        sub["answer_type"] = [kind] * len(idx)
        comps = [completions[i] for i in idx]
        if kind in ("closed", "open"):
            yes_no = yes_no_reward(comps, **sub)
            opened = open_reward(comps, **sub)
            scores = [y if y is not None else o for y, o in zip(yes_no, opened)]
        elif kind in _BY_TYPE:
            scores = _BY_TYPE[kind](comps, **sub)
        else:
            raise ValueError(f"unknown answer_type {kind!r}; known: choice, closed, open, numeric, box")
        for i, s in zip(idx, scores):
            out[i] = s
    return out


_BY_TYPE.update({"choice": choice_reward, "numeric": numeric_reward, "box": box_iou_reward})


def accuracy_strict_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """:func:`accuracy_reward`, but 0 unless the reply is :func:`format_valid` (the answer must be inside a
    well-formed ``<think>..</think><answer>..</answer>``). With the plain accuracy an answer without tags
    still earns full credit, so a policy can buy accuracy by dropping the format."""
    scores = accuracy_reward(completions, **kwargs)
    return [s if s is None or format_valid(c) else 0.0 for s, c in zip(scores, completions)]


REWARDS: dict[str, RewardFn] = {
    "format": format_reward,
    "format_partial": format_partial_reward,
    "accuracy": accuracy_reward,
    "accuracy_strict": accuracy_strict_reward,
    "choice": choice_reward,
    "yes_no": yes_no_reward,
    "open": open_reward,
    "numeric": numeric_reward,
    "box_iou": box_iou_reward,
}


def get_rewards(weights: Mapping[str, float]) -> tuple[list[RewardFn], list[float], list[str]]:
    """Recipe ``rewards: {format: 0.5, accuracy: 1.0}`` -> (functions, weights, names), for
    ``GRPOTrainer(reward_funcs=...)`` and ``GRPOConfig(reward_weights=...)``."""
    unknown = [name for name in weights if name not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; known: {', '.join(REWARDS)}")
    if not weights:
        raise ValueError("a recipe needs at least one reward")
    names = list(weights)
    funcs = []
    for name in names:
        fn = REWARDS[name]
        # TRL names a reward function by __name__ in its logs ("rewards/<name>/mean"): use the registry name.
        def named(completions, _fn=fn, **kw):
            return _fn(completions, **kw)
        named.__name__ = name
        funcs.append(named)
    return funcs, [float(weights[n]) for n in names], names


def is_correct(reply: str, question: Mapping[str, Any]) -> bool:
    """Does the eval suite (rule ``gmai@1``) count ``reply`` correct for ``question``? Box and
    numeric questions, which the VQA rules do not cover, count at IoU >= 0.5 / within tolerance."""
    kind = question.get("answer_type", "open")
    gold = str(question["answer"])
    if kind == "box":
        return (box_iou_reward([reply], answer=[gold], answer_type=["box"])[0] or 0.0) >= 0.5
    if kind == "numeric":
        return numeric_score(reply, gold, rel_tol=float(question.get("tolerance") or 0.05)) == 1.0
    verdict = scoring.judge(reply, gold, kind, options_mapping(question.get("options")), RULE)
    return bool(verdict and verdict.correct)
