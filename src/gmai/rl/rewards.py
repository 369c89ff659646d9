"""Verifiable rewards for GRPO: plain functions with TRL's reward signature.

Every reward is ``def reward(completions, **columns) -> list[float | None]``: ``completions`` are
strings or TRL conversational completions (``[{"role": "assistant", "content": ...}]``); the
question's dataset columns (``answer``, ``answer_type``, ``options``, ...) arrive as keyword
arguments, one value per completion. A reward returns ``None`` for a completion whose question it
does not apply to (TRL treats None as "not scored" and ignores it in the weighted sum), so the
type-specific accuracies can be combined freely.

The contract with evaluation: every accuracy reward names a scoring rule (``rule``, default
``gmai@1``; any name in ``gmai.eval.scoring.RULES``, e.g. ``gmai-synonyms@1`` to accept synonyms) and
scores 1.0 exactly when ``scoring.judge`` under that rule counts the reply correct. Anything else a
reward gives is partial credit below 1.0 (token F1 for open answers, capped at 0.99), or None where the
rule does not score the question. The verdicts are :mod:`gmai.eval.scoring`'s; what is added here is
only what RL needs beyond a verdict: partial credit (token F1, IoU), numeric tolerance and the format
check. Numeric and box questions, which no VQA rule covers, are judged here (tolerance; IoU, counted
correct by :func:`is_correct` at IoU >= 0.5).
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


def _verdict(reply: str, gold: str, kind: str, options: Mapping[str, str], rule: str) -> float | None:
    """1.0 / 0.0 from ``scoring.judge`` under ``rule``; None where the rule does not score the question."""
    verdict = scoring.judge(reply, gold, kind, options, rule)
    return None if verdict is None else (1.0 if verdict.correct else 0.0)


def choice_reward(completions: Sequence[Any], answer: Sequence[str] | None = None,
                  options: Sequence[Any] | None = None, answer_type: Sequence[str] | None = None,
                  rule: str = RULE, **kwargs: Any) -> list[float | None]:
    """1.0 when ``rule`` counts the picked option right (``gmai@1``: ``scoring.extract_choice`` is the gold
    option); None for non-choice rows."""
    n = len(completions)
    golds, opts = _col(answer, n, "answer"), _col(options, n, "options")
    types = _col(answer_type, n, "answer_type", "choice")
    out: list[float | None] = []
    for completion, gold, option_list, kind in zip(completions, golds, opts, types):
        if kind != "choice" or gold is None:
            out.append(None)
            continue
        out.append(_verdict(completion_text(completion), str(gold), "choice", options_mapping(option_list), rule))
    return out


def yes_no_reward(completions: Sequence[Any], answer: Sequence[str] | None = None,
                  answer_type: Sequence[str] | None = None, rule: str = RULE, **kwargs: Any) -> list[float | None]:
    """1.0 when ``rule`` counts the reply right for a yes/no gold (``gmai@1``: the reply's polarity,
    ``scoring.polarity``, with negations, hedges, uncertainty); None for rows whose gold is not yes/no."""
    n = len(completions)
    out: list[float | None] = []
    for completion, gold, kind in zip(completions, _col(answer, n, "answer"),
                                      _col(answer_type, n, "answer_type", "closed")):
        if gold is None or kind == "choice" or scoring.gold_polarity(str(gold)) is None:
            out.append(None)
            continue
        out.append(_verdict(completion_text(completion), str(gold), kind if kind in ("open", "closed") else "closed",
                            {}, rule))
    return out


# ---------------------------------------------------------------------------------------------
# Open answers: the rule's verdict, else token F1 as partial credit (< 1)
# ---------------------------------------------------------------------------------------------


def open_answer_score(reply: str, gold: str, rule: str = RULE, kind: str = "open") -> float:
    """1.0 when ``rule`` counts the reply right for an open gold; otherwise the token F1 between the
    extracted answer and the gold (canonical names under a synonym rule) as partial credit, capped at
    0.99 so that only a reply the rule accepts earns a full point."""
    verdict = scoring.judge(reply, gold, kind, {}, rule)
    if verdict is None:
        return 0.0
    if verdict.correct:
        return 1.0
    span = scoring.extract_answer(reply, RULE)
    f1 = scoring.token_f1(span, gold)
    if rule.startswith("gmai-synonyms@"):
        f1 = max(f1, scoring.token_f1(scoring.canonical_answer(span), scoring.canonical_answer(gold)))
    return min(f1, 0.99)


def open_reward(completions: Sequence[Any], answer: Sequence[str] | None = None,
                answer_type: Sequence[str] | None = None, rule: str = RULE, **kwargs: Any) -> list[float | None]:
    """:func:`open_answer_score` on open rows; None for choice, yes/no, numeric and box rows."""
    n = len(completions)
    out: list[float | None] = []
    for completion, gold, kind in zip(completions, _col(answer, n, "answer"),
                                      _col(answer_type, n, "answer_type", "open")):
        if gold is None or kind not in ("open", "closed") or scoring.gold_polarity(str(gold)) is not None:
            out.append(None)
            continue
        out.append(open_answer_score(completion_text(completion), str(gold), rule, kind))
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


def accuracy_reward(completions: Sequence[Any], answer_type: Sequence[str] | None = None, rule: str = RULE,
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
            yes_no = yes_no_reward(comps, rule=rule, **sub)
            opened = open_reward(comps, rule=rule, **sub)
            scores = [y if y is not None else o for y, o in zip(yes_no, opened)]
        elif kind == "choice":
            scores = choice_reward(comps, rule=rule, **sub)
        elif kind in _BY_TYPE:
            scores = _BY_TYPE[kind](comps, **sub)
        else:
            raise ValueError(f"unknown answer_type {kind!r}; known: choice, closed, open, numeric, box")
        for i, s in zip(idx, scores):
            out[i] = s
    return out


_BY_TYPE.update({"numeric": numeric_reward, "box": box_iou_reward})


def accuracy_strict_reward(completions: Sequence[Any], rule: str = RULE, **kwargs: Any) -> list[float | None]:
    """:func:`accuracy_reward`, but 0 unless the reply is :func:`format_valid` (the answer must be inside a
    well-formed ``<think>..</think><answer>..</answer>``). With the plain accuracy an answer without tags
    still earns full credit, so a policy can buy accuracy by dropping the format."""
    scores = accuracy_reward(completions, rule=rule, **kwargs)
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


RULED = {"accuracy", "accuracy_strict", "choice", "yes_no", "open"}  # the rewards that take a scoring rule


def get_rewards(weights: Mapping[str, float], rule: str = RULE) -> tuple[list[RewardFn], list[float], list[str]]:
    """Recipe ``rewards: {format: 0.5, accuracy: 1.0}`` -> (functions, weights, names), for
    ``GRPOTrainer(reward_funcs=...)`` and ``GRPOConfig(reward_weights=...)``; the accuracy rewards
    score under ``rule`` (a name in ``scoring.RULES``)."""
    if rule not in scoring.RULES:
        raise ValueError(f"unknown scoring rule {rule!r}; known: {', '.join(scoring.RULES)}")
    unknown = [name for name in weights if name not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; known: {', '.join(REWARDS)}")
    if not weights:
        raise ValueError("a recipe needs at least one reward")
    names = list(weights)
    funcs = []
    for name in names:
        fn = REWARDS[name]
        bound = {"rule": rule} if name in RULED else {}
        # TRL names a reward function by __name__ in its logs ("rewards/<name>/mean"): use the registry name.
        def named(completions, _fn=fn, _bound=bound, **kw):
            return _fn(completions, **_bound, **kw)
        named.__name__ = name
        funcs.append(named)
    return funcs, [float(weights[n]) for n in names], names


def is_correct(reply: str, question: Mapping[str, Any], rule: str = RULE) -> bool:
    """Does the eval suite (``rule``, default ``gmai@1``) count ``reply`` correct for ``question``? Box
    and numeric questions, which the VQA rules do not cover, count at IoU >= 0.5 / within tolerance."""
    kind = question.get("answer_type", "open")
    gold = str(question["answer"])
    if kind == "box":
        return (box_iou_reward([reply], answer=[gold], answer_type=["box"])[0] or 0.0) >= 0.5
    if kind == "numeric":
        return numeric_score(reply, gold, rel_tol=float(question.get("tolerance") or 0.05)) == 1.0
    verdict = scoring.judge(reply, gold, kind, options_mapping(question.get("options")), rule)
    return bool(verdict and verdict.correct)
