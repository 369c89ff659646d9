"""Training data: read the data engine's JSONL, keep the training split, map to source groups, mix, filter.

Every line ends up counted: kept, held out (val/test split), or dropped with a reason.
Malformed input (bad JSON, no conversations, a missing image file) is an error naming the file and line.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmai.train.config import DataArgs, GroupRule

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
IMAGE_PLACEHOLDER = "<image>"


class DataError(ValueError):
    pass


@dataclass
class Sample:
    id: str
    subset: str
    messages: list[dict[str, str]]  # [{"role": "user"|"assistant"|"system", "content": str}], no "<image>"
    image: Path | None = None  # absolute path (the first one of a multi-image sample); None = text-only dialogue
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    images: tuple[Path, ...] = ()  # every image of a multi-image sample (a volume as slices), in order

    def all_images(self) -> tuple[Path, ...]:
        return self.images or ((self.image,) if self.image is not None else ())

    def assistant_texts(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "assistant"]

    def all_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages)


def _messages(conversations: Any, where: str, has_image: bool, n_images: int = 1) -> list[dict[str, str]]:
    if not isinstance(conversations, list) or not conversations:
        raise DataError(f"{where}: 'conversations' must be a non-empty list")
    messages, placeholders = [], 0
    for turn in conversations:
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(f"{where}: each conversation turn needs 'from' and 'value', got {turn!r:.80}")
        role = ROLES.get(turn["from"])
        if role is None:
            raise DataError(f"{where}: unknown speaker {turn['from']!r} (expected human/gpt/system)")
        text = str(turn["value"])
        placeholders += text.count(IMAGE_PLACEHOLDER)
        # The image goes in as a content part at the start of the first user turn (LLaVA convention).
        text = text.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "").strip()
        messages.append({"role": role, "content": text})
    if n_images > 1 and placeholders != n_images:
        raise DataError(f"{where}: {placeholders} '<image>' placeholders for {n_images} images")
    if n_images <= 1 and placeholders > 1:
        raise DataError(f"{where}: {placeholders} '<image>' placeholders for one image")
    if placeholders and not has_image:
        raise DataError(f"{where}: the text has an '<image>' placeholder but the line has no 'image'")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant ('gpt') turn to learn from")
    return messages


def read_subset(path: Path, root: Path, args: DataArgs, counts: Counter) -> list[Sample]:
    """One JSONL file -> training samples (held-out splits counted, not returned)."""
    samples = []
    subset = path.stem
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg})") from None
            split = row.get("split") or row.get("meta", {}).get("split") or "train"
            if split not in args.train_splits:
                counts[f"held out (split={split})"] += 1
                continue
            paths = row.get("image") or []
            images = tuple((root / p).resolve() for p in ([paths] if isinstance(paths, str) else paths))
            for image in images:
                if not image.is_file():
                    raise DataError(f"{where}: image file {str(image)!r} does not exist")
            messages = _messages(row.get("conversations"), where, bool(images), len(images))
            meta = {k: v for k, v in row.items() if k not in ("id", "image", "conversations")}
            samples.append(Sample(id=str(row.get("id", f"{subset}:{lineno}")), subset=subset, messages=messages,
                                  image=images[0] if images else None, meta=meta,
                                  images=images if len(images) > 1 else ()))
            if args.max_records and len(samples) >= args.max_records:
                break
    counts[f"read ({subset})"] += len(samples)
    return samples


def load_samples(data_dir, args: DataArgs) -> tuple[list[Sample], Counter]:
    """Every configured subset file under each data folder -> training samples with their source group.

    Only the top-level ``<Subset>.jsonl`` files are read (``gmai data build`` keeps val/test records apart
    under ``heldout/``); a row whose ``split`` is not a training split is counted as held out, not used.
    """
    roots = [Path(d) for d in data_dir] if isinstance(data_dir, (list, tuple)) else [Path(data_dir)]
    counts: Counter = Counter()
    samples: list[Sample] = []
    for root in roots:
        if not root.is_dir():
            raise DataError(f"data folder {str(root)!r} does not exist (run `gmai data build` first)")
        found = 0
        for subset in args.subsets:
            path = root / f"{subset}.jsonl"
            if path.is_file():
                found += 1
                samples += read_subset(path, root, args, counts)
        if not found:
            raise DataError(f"data folder {str(root)!r} has none of {', '.join(s + '.jsonl' for s in args.subsets)}")
    if not samples:
        raise DataError(f"no training samples under {', '.join(map(str, roots))} (counts: {dict(counts)})")
    for s in samples:
        s.group = assign_group(s, args.groups, args.default_group)
    return samples, counts


def _dataset_name(sample: Sample) -> str:
    if sample.meta.get("source"):
        return str(sample.meta["source"])
    parts = sample.id.split("#")  # "2d#cls#histopathology#crc100k#..." -> "crc100k"
    return parts[3] if len(parts) > 3 else ""


def rule_matches(rule: GroupRule, sample: Sample) -> bool:
    checks = []
    if rule.subset:
        checks.append(sample.subset in rule.subset)
    if rule.id_prefix:
        checks.append(any(sample.id.startswith(p) for p in rule.id_prefix))
    if rule.id_contains:
        checks.append(any(p in sample.id for p in rule.id_contains))
    if rule.source:
        checks.append(_dataset_name(sample).lower() in {s.lower() for s in rule.source})
    if rule.has_image is not None:
        checks.append((sample.image is not None) == rule.has_image)
    return bool(checks) and all(checks)


def assign_group(sample: Sample, rules: list[GroupRule], default: str) -> str:
    for rule in rules:
        if rule_matches(rule, sample):
            return rule.group
    return default


def sample_mixture(samples: list[Sample], mixture: dict[str, float], seed: int) -> tuple[list[Sample], dict]:
    """Take ``ratio`` of each group: 0 = none, 0.3 = a seeded random 30%, 1 = all, 2.5 = all twice + half.

    Groups missing from ``mixture`` are not used. Returns the samples and per-group counts.
    """
    by_group: dict[str, list[Sample]] = {}
    for s in samples:
        by_group.setdefault(s.group, []).append(s)
    chosen, report = [], {}
    for group, members in sorted(by_group.items()):
        ratio = mixture.get(group, 0.0)
        if ratio < 0:
            raise DataError(f"mixture ratio for {group!r} must be >= 0, got {ratio}")
        rng = random.Random(f"{seed}:{group}")
        whole, frac = int(ratio), ratio - int(ratio)
        picked = members * whole
        if frac > 0:
            picked += rng.sample(members, round(frac * len(members)))
        chosen += picked
        report[group] = {"available": len(members), "ratio": ratio, "used": len(picked)}
    return chosen, report


def quality_filter(samples: list[Sample], args: DataArgs) -> tuple[list[Sample], Counter]:
    """The paper's Stage III filter: too-short captions, empty replies and low-confidence labels are dropped.

    Only captions (``caption_subsets``) have a minimum length: a short VQA answer ("yes", "D.") is fine.
    """
    kept, dropped = [], Counter()
    for s in samples:
        replies = s.assistant_texts()
        confidence = s.meta.get("confidence", s.meta.get("label_confidence"))
        if any(not t.strip() for t in replies):
            dropped["empty reply"] += 1
        elif min(len(t.split()) for t in replies) < args.min_reply_words:
            dropped[f"reply shorter than {args.min_reply_words} words"] += 1
        elif s.subset in args.caption_subsets and min(len(t.split()) for t in replies) < args.min_caption_words:
            dropped[f"caption shorter than {args.min_caption_words} words"] += 1
        elif confidence is not None and float(confidence) < args.min_confidence:
            dropped[f"label confidence below {args.min_confidence}"] += 1
        else:
            kept.append(s)
    return kept, dropped


def corpus_texts(samples: list[Sample]) -> list[str]:
    """The corpus text (every turn of every training sample): the tiny tokenizer and LM warm-up use it."""
    seen, texts = set(), []
    for s in samples:
        text = s.all_text()
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def short_answer_form(samples: list[Sample], share: float, seed: int) -> tuple[list[Sample], Counter]:
    """LLaVA-1.5's short-answer convention, with the exact instruction the evaluator sends
    (``gmai.eval.runner.build_prompt(item, "short")``: "Answer the question using a single word or phrase.",
    or the option-letter instruction for multiple choice).

    A single-turn Q&A sample (``answer_type`` open/closed/choice and a gold ``answer``) whose reply already is
    that answer (a benchmark's own train split, "yes", "C") gets the instruction; a seeded ``share`` of the
    others, whose replies are template sentences ("The finding is cyst."), is rewritten to the instruction and
    the bare gold answer; the rest stay sentences without it. Captions and dialogue are untouched. The model
    thus learns both forms and which one the instruction asks for, from training rows only.
    """
    from gmai.eval.benchmarks.gmai_heldout import item_from_row
    from gmai.eval.runner import build_prompt

    rng = random.Random(f"{seed}:short-answers")
    out, counts = [], Counter()
    for s in samples:
        roles = [m["role"] for m in s.messages]
        answer_type = str(s.meta.get("answer_type") or "")
        question = roles == ["user", "assistant"] and answer_type in ("open", "closed", "choice")
        if not question or not s.meta.get("answer"):
            out.append(s)
            continue
        user, reply = (m["content"] for m in s.messages)
        row = {**s.meta, "conversations": [{"from": "human", "value": user}, {"from": "gpt", "value": reply}]}
        item = item_from_row(row, Path("."), "train", s.id)
        already_short = reply.strip().rstrip(".").lower() == item.answer.strip().lower()
        if not already_short and rng.random() >= share:
            counts["sentence reply kept"] += 1
            out.append(s)
            continue
        counts["short answer (was already)" if already_short else "short answer (rewritten)"] += 1
        messages = [{"role": "user", "content": build_prompt(item, "short")},
                    {"role": "assistant", "content": item.answer}]
        out.append(Sample(s.id, s.subset, messages, s.image, s.group, s.meta, s.images))
    return out, counts


def questions_per_image(samples: list[Sample], max_turns: int, seed: int) -> tuple[list[Sample], Counter]:
    """Merge single-turn samples (one user turn, one reply: a question and its answer, or an instruction and
    its caption) on the same image(s) and in the same source group into multi-turn conversations of up to
    ``max_turns`` turns, as LLaVA-1.5 does with its VQA data: the image's tokens are then encoded and attended
    once for several answers. VQA-RAD asks ~11 questions per image, each ~30 tokens against the image's 64;
    at 4 per conversation the demo's Stage III needs ~0.7x the tokens.

    Copies of a sample (a mixture ratio above 1) go to different conversations. The order within an image is a
    seeded shuffle, and so is the order of the result. Multi-turn, reply-only and text-only samples pass through.
    """
    if max_turns <= 1:
        return samples, Counter()
    rng = random.Random(f"{seed}:questions-per-image")
    out, by_key, counts = [], {}, Counter()
    for s in samples:
        if [m["role"] for m in s.messages] == ["user", "assistant"] and s.all_images():
            by_key.setdefault((s.group, s.all_images()), []).append(s)
        else:
            out.append(s)
    for members in by_key.values():
        rng.shuffle(members)
        conversations: list[list[Sample]] = []
        for s in members:
            home = next((c for c in conversations if len(c) < max_turns and all(x.id != s.id for x in c)), None)
            if home is None:
                conversations.append([s])
            else:
                home.append(s)
        for c in conversations:
            counts[f"{len(c)} question(s)"] += 1
            messages = [m for x in c for m in x.messages]
            ids = "+".join(x.id for x in c) if len(c) > 1 else c[0].id
            out.append(Sample(ids, c[0].subset, messages, c[0].image, c[0].group,
                              {**c[0].meta, "questions": len(c)} if len(c) > 1 else c[0].meta, c[0].images))
    rng.shuffle(out)
    return out, counts
