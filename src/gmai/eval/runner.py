"""The evaluation runner: benchmark items -> batched generation -> per-rule verdicts -> reports.

Generation goes through :mod:`gmai.infer` (one batched API for local checkpoints and OpenAI-compatible
endpoints), greedy by default. Replies are appended to a per-benchmark cache after every batch, so an
interrupted run resumes where it stopped. An item whose image is missing or unreadable is recorded
with its error, counted as failed and scored as wrong under every rule: never skipped.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from gmai.eval import scoring
from gmai.eval.benchmarks import BenchItem, ImageLoadError, Loaded, get_spec, load_benchmark
from gmai.eval.scoring import DEFAULT_RULE, RULES

DEFAULT_RULES = ("gmai@1", "gmai-recall@1", "lmms-eval-exact@1", "multimedeval@1", "medevalkit@1")
BREAKDOWN_FIELDS = ("answer_type", "organ", "modality", "question_type")
PROMPT_STYLES = ("plain", "short")
REPORT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# What to evaluate
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchSpec:
    """``NAME=PATH`` or ``NAME:SPLIT=PATH`` from the command line."""

    name: str
    path: str
    split: str | None = None

    @classmethod
    def parse(cls, text: str) -> "BenchSpec":
        if "=" not in text:
            raise ValueError(f"--bench {text!r}: expected NAME=PATH or NAME:SPLIT=PATH (e.g. vqa-rad=../data/vqa-rad)")
        name, path = text.split("=", 1)
        name, _, split = name.partition(":")
        get_spec(name.strip())  # unknown names fail here, with the list of known ones
        return cls(name.strip(), path.strip(), split.strip() or None)

    @property
    def label(self) -> str:
        return self.name if self.split is None else f"{self.name}:{self.split}"


def build_prompt(item: BenchItem, style: str = "plain") -> str:
    """The user text for an item. ``plain``: the question (and lettered options for multiple choice),
    as LLaVA-style training data asks, or the item's own training-format prompt when it has one;
    ``short``: LLaVA-1.5's short-answer instructions added."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; use one of {PROMPT_STYLES}")
    if style == "plain" and item.meta.get("prompt"):  # the exact training-format prompt (gmai held-out)
        return item.meta["prompt"]
    text = item.question
    if item.answer_type == "choice" and item.options:
        text += "\n" + "\n".join(f"{k}. {v}" for k, v in item.options.items())
        if style == "short":
            text += "\nAnswer with the option's letter from the given choices directly."
    elif style == "short":
        text += "\nAnswer the question using a single word or phrase."
    return text


# ---------------------------------------------------------------------------------------------
# Prediction cache (resume)
# ---------------------------------------------------------------------------------------------

class PredictionCache:
    """Append-only JSONL of ``{"qid", "prediction", "error"}`` for one benchmark of one run.

    The first line is a header with a fingerprint of the model and decoding settings; a cache written
    under other settings is refused rather than silently mixed in.
    """

    def __init__(self, path: Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else {}
        if header.get("fingerprint") != self.fingerprint:
            raise ValueError(f"prediction cache {self.path} was written for another model or decoding setup "
                             f"({header.get('fingerprint')} != {self.fingerprint}); use a new --out folder "
                             f"or delete the cache to start over")
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: that item is generated again
            self.entries[str(entry["qid"])] = entry

    def add(self, entries: Iterable[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            for entry in entries:
                self.entries[str(entry["qid"])] = entry
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")


class MemoryCache:
    """:class:`PredictionCache`'s interface without a file, for callers that need no resume."""

    def __init__(self):
        self.entries: dict[str, dict[str, Any]] = {}

    def add(self, entries: Iterable[dict[str, Any]]) -> None:
        self.entries.update({str(e["qid"]): e for e in entries})


def fingerprint(model: str, config: Any, prompt_style: str, max_side: int = 0) -> str:
    blob = json.dumps({"model": model, "config": asdict(config), "prompt": prompt_style, "max_side": max_side},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _prepare_batch(chunk: Sequence[BenchItem], prompt_style: str, max_side: int,
                   prepare_images: Callable[[list], list] | None = None):
    """(items with their requests, failure entries) for one batch: images loaded (and, with ``prepare_images``,
    the backend's own per-image preprocessing done), prompts built."""
    from gmai.infer import ChatRequest

    ready, failed = [], []
    for item in chunk:
        try:
            images = item.load_images(max_side)
            if prepare_images is not None:
                images = prepare_images(images)
            ready.append((item, ChatRequest(prompt=build_prompt(item, prompt_style), images=images)))
        except ImageLoadError as err:
            failed.append({"qid": item.qid, "prediction": None, "error": str(err)})
    return ready, failed


def generate_predictions(backend, items: Sequence[BenchItem], config, cache: PredictionCache | MemoryCache | None = None,
                         batch_size: int = 16, prompt_style: str = "plain",
                         progress: Callable[[int], None] | None = None,
                         max_side: int = 0) -> dict[str, dict[str, Any]]:
    """Replies for every item not in the cache yet, in batches; returns qid -> cache entry
    (``{"qid", "prediction", "error"}``; an item whose image fails has prediction None and the error).
    The one evaluation loop of the project: ``gmai eval`` and the R1 evaluation (``gmai.rl.evaluate``).

    The next batch's images are decoded, and preprocessed when the backend offers ``prepare_images``
    (:meth:`gmai.infer.local.LocalBackend.prepare_images`: pad and resize a full-size image to the model's
    side), in a background thread while the current batch generates (PIL releases the GIL while decoding
    and resizing), so image work overlaps model time."""
    from concurrent.futures import ThreadPoolExecutor

    cache = MemoryCache() if cache is None else cache
    todo = [it for it in items if it.qid not in cache.entries]
    if progress:
        progress(len(items) - len(todo))
    chunks = [todo[i:i + max(1, batch_size)] for i in range(0, len(todo), max(1, batch_size))]
    prepare = partial(_prepare_batch, prompt_style=prompt_style, max_side=max_side,
                      prepare_images=getattr(backend, "prepare_images", None))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, chunks[0]) if chunks else None
        for k, chunk in enumerate(chunks):
            ready, failed = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(prepare, chunks[k + 1])
            replies = backend.generate([req for _, req in ready], config, batch_size=batch_size) if ready else []
            if len(replies) != len(ready):
                raise RuntimeError(f"backend {getattr(backend, 'name', backend)!r} returned {len(replies)} replies "
                                   f"for {len(ready)} questions")
            cache.add(failed + [{"qid": item.qid, "prediction": reply, "error": None}
                                for (item, _), reply in zip(ready, replies, strict=True)])
            if progress:
                progress(len(chunk))
    return {it.qid: cache.entries[it.qid] for it in items}


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def score_items(items: Sequence[BenchItem], predictions: dict[str, dict[str, Any]],
                rules: Sequence[str], judge=None) -> list[dict[str, Any]]:
    """One row per item: the prediction (or its error) and each rule's verdict and question kind.
    ``gmai+judge@1`` in ``rules`` needs ``judge`` (a :class:`gmai.eval.judge.ChoiceJudge`)."""
    from gmai.eval.judge import JUDGE_RULE, judged_verdict

    rows = []
    for item in items:
        entry = predictions.get(item.qid) or {"prediction": None, "error": "no prediction for this question"}
        pred, error = entry.get("prediction"), entry.get("error")
        if pred is None and not error:
            error = "empty prediction"
        verdicts, kinds = {}, {}
        for rule in rules:
            if rule == JUDGE_RULE:
                v = judged_verdict(pred or "", item.answer, item.answer_type, item.options, item.question,
                                   judge if error is None else None)
            else:
                v = scoring.judge(pred or "", item.answer, item.answer_type, item.options, rule=rule)
            verdicts[rule] = None if v is None else (bool(v.correct) and error is None)
            kinds[rule] = None if v is None else v.kind
        rows.append({"benchmark": item.benchmark, "qid": item.qid, "question": item.question,
                     "answer": item.answer, "answer_type": item.answer_type, "options": item.options,
                     "prediction": pred, "error": error, "verdicts": verdicts, "kinds": kinds,
                     "organ": item.organ, "modality": item.modality, "question_type": item.question_type,
                     "images": [ref.describe() for ref in item.images]})
    return rows


def _acc(values: list[bool]) -> dict[str, Any]:
    n = len(values)
    return {"accuracy": (sum(values) / n) if n else None, "correct": int(sum(values)), "n": n}


def summarise(rows: Sequence[dict[str, Any]], rules: Sequence[str]) -> dict[str, Any]:
    """Per rule: accuracy overall and per question kind (as that rule defines kinds), plus breakdowns."""
    out: dict[str, Any] = {"rules": {}, "breakdowns": {}}
    for rule in rules:
        scored = [r for r in rows if r["verdicts"][rule] is not None]
        by_kind: dict[str, list[bool]] = {}
        for r in scored:
            by_kind.setdefault(r["kinds"][rule], []).append(r["verdicts"][rule])
        out["rules"][rule] = {**_acc([r["verdicts"][rule] for r in scored]),
                              "by_type": {k: _acc(v) for k, v in sorted(by_kind.items())},
                              "not_applicable": len(rows) - len(scored)}
    for fld in BREAKDOWN_FIELDS:
        values = sorted({r[fld] for r in rows if r[fld]})
        if len(values) < 1:
            continue
        out["breakdowns"][fld] = {
            rule: {v: _acc([r["verdicts"][rule] for r in rows if r[fld] == v and r["verdicts"][rule] is not None])
                   for v in values} for rule in rules}
    return out


def open_question_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean exact / recall / F1 / BLEU-1..4 / ROUGE-L over the dataset's open questions (gmai extraction)."""
    open_rows = [r for r in rows if r["answer_type"] == "open"]
    if not open_rows:
        return {}
    sums: Counter = Counter()
    for r in open_rows:
        for k, v in scoring.open_metrics(r["prediction"] or "", r["answer"]).items():
            sums[k] += v
    return {"n": len(open_rows), **{k: v / len(open_rows) for k, v in sums.items()}}


# ---------------------------------------------------------------------------------------------
# Baselines: no image, no model
# ---------------------------------------------------------------------------------------------

def _answer_key(item: BenchItem) -> str:
    return item.answer if item.answer_type == "choice" else scoring.normalize_text(item.answer)


def majority_baseline(train: Sequence[BenchItem], test: Sequence[BenchItem]) -> dict[str, str]:
    """Each test question gets the most common train answer of its answer type."""
    by_type: dict[str, Counter] = {}
    for it in train:
        by_type.setdefault(it.answer_type, Counter())[_answer_key(it)] += 1
    overall = sum(by_type.values(), Counter())
    preds = {}
    for it in test:
        counts = by_type.get(it.answer_type) or overall
        preds[it.qid] = counts.most_common(1)[0][0] if counts else ""
    return preds


def question_only_baseline(train: Sequence[BenchItem], test: Sequence[BenchItem]) -> dict[str, str]:
    """Each test question gets the answer of the most similar train question (token Jaccard), same
    answer type preferred; ties go to the earlier train question. Multiple choice answers are given as
    the neighbour's option text, mapped onto the test item's options when it is one of them."""
    index = [(set(scoring.tokens(it.question)), it) for it in train]
    preds = {}
    for it in test:
        q = set(scoring.tokens(it.question))
        pool = [(s, t) for s, t in index if t.answer_type == it.answer_type] or index
        best, best_sim = None, -1.0
        for s, t in pool:
            sim = len(q & s) / len(q | s) if (q or s) else 0.0
            if sim > best_sim:
                best, best_sim = t, sim
        if best is None:
            preds[it.qid] = ""
        elif it.answer_type == "choice":
            text = best.options.get(best.answer, best.answer)
            preds[it.qid] = scoring.gold_letter(text, it.options) or text
        else:
            preds[it.qid] = best.answer
    return preds


BASELINES = {"majority": majority_baseline, "question-only": question_only_baseline}


def baseline_reports(spec: BenchSpec, test: Sequence[BenchItem], rules: Sequence[str],
                     judge=None) -> dict[str, Any]:
    """Score the baselines with the same rules; needs the benchmark's train split next to the test one."""
    if not get_spec(spec.name).has_train:
        return {"skipped": f"{spec.name} has no train split to build baselines from"}
    try:
        train = load_benchmark(spec.name, spec.path, split="train")
    except (FileNotFoundError, ValueError) as err:
        return {"skipped": f"train split unavailable: {err}"}
    out = {}
    for name, fn in BASELINES.items():
        preds = fn(train, test)
        rows = score_items(test, {q: {"prediction": p, "error": None} for q, p in preds.items()}, rules, judge)
        out[name] = {"rules": summarise(rows, rules)["rules"], "train_items": len(train)}
    return out


# ---------------------------------------------------------------------------------------------
# Whole runs
# ---------------------------------------------------------------------------------------------

@dataclass
class EvalOptions:
    rules: Sequence[str] = DEFAULT_RULES
    batch_size: int = 16
    limit: int | None = None
    prompt_style: str = "plain"
    baselines: bool = True
    judge: Any = None  # a gmai.eval.judge.ChoiceJudge: adds the gmai+judge@1 rule
    max_side: int = 0  # > 0: downscale images like `gmai data build --max-side` (use 512 for gmai-built models)


def effective_rules(options: EvalOptions) -> list[str]:
    from gmai.eval.judge import JUDGE_RULE

    rules = [r for r in options.rules if r != JUDGE_RULE]
    return rules + [JUDGE_RULE] if options.judge is not None else rules


def check_rules(rules: Sequence[str]) -> list[str]:
    from gmai.eval.judge import JUDGE_RULE

    if JUDGE_RULE in rules:
        raise ValueError(f"{JUDGE_RULE} needs a judge endpoint (--judge-url and --judge-model)")
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise ValueError(f"unknown scoring rule(s) {unknown}; known: {', '.join(RULES)}")
    return list(rules)


_NOT_QUESTIONS: dict[BenchSpec, dict[str, int]] = {}  # gmai held-out rows that are not questions, per spec


def load_items(spec: BenchSpec, limit: int | None) -> Loaded:
    """The benchmark's scorable items (first ``limit``) with ``failures``: its rows that cannot be scored."""
    items = load_benchmark(spec.name, spec.path, split=spec.split)
    if spec.name == "gmai":
        from gmai.eval.benchmarks import gmai_heldout

        _NOT_QUESTIONS[spec] = dict(gmai_heldout.LAST_SKIPPED)
    return Loaded(items[:limit], items.failures) if limit else items


def benchmark_report(spec: BenchSpec, items: Sequence[BenchItem], rows: list[dict[str, Any]],
                     options: EvalOptions) -> dict[str, Any]:
    failed = [{"qid": r["qid"], "error": r["error"], "stage": "generation"} for r in rows if r["error"]]
    unscorable = [{"qid": f["qid"], "error": f["reason"], "stage": "load"} for f in getattr(items, "failures", [])]
    summary = summarise(rows, effective_rules(options))
    report = {"benchmark": spec.name, "path": str(spec.path), "split": items[0].split if items else spec.split,
              "n_items": len(rows) + len(unscorable), "n_scored": len(rows) - len(failed),
              "n_failed": len(failed) + len(unscorable), "n_unscorable": len(unscorable),
              "failures": failed + unscorable, "rules": summary["rules"], "breakdowns": summary["breakdowns"],
              "open_metrics": open_question_metrics(rows)}
    if spec in _NOT_QUESTIONS:
        report["not_questions"] = _NOT_QUESTIONS[spec]
    if options.baselines:
        report["baselines"] = baseline_reports(spec, items, effective_rules(options), options.judge)
    return report


def run_eval(model: str, benches: Sequence[BenchSpec], out: str | Path, options: EvalOptions | None = None,
             config=None, backend=None, api_key: str | None = None, model_name: str | None = None,
             console=None) -> dict[str, Any]:
    """Generate (or resume) replies for every benchmark, score them, write the reports under ``out``."""
    from gmai.infer import GenerationConfig, load_backend

    options = options or EvalOptions()
    check_rules(options.rules)
    config = config or GenerationConfig(max_new_tokens=64, temperature=0.0)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = [(spec, load_items(spec, options.limit)) for spec in benches]  # fail fast on a bad path
    backend = backend or load_backend(model, api_key=api_key, model_name=model_name)
    fp = fingerprint(model, config, options.prompt_style, options.max_side)
    bench_reports, all_rows, timing = {}, [], {}
    for spec, items in loaded:
        cache = PredictionCache(out / "cache" / f"{spec.label.replace(':', '_')}.jsonl", fp)
        start = time.perf_counter()
        with _progress(console, f"{spec.label}", len(items)) as advance:
            preds = generate_predictions(backend, items, config, cache, options.batch_size,
                                         options.prompt_style, progress=advance, max_side=options.max_side)
        timing[spec.label] = round(time.perf_counter() - start, 3)
        rows = score_items(items, preds, effective_rules(options), options.judge)
        all_rows.extend(rows)
        bench_reports[spec.label] = benchmark_report(spec, items, rows, options)
    report = _report_header(model, options, config) | {"benchmarks": bench_reports, "seconds": timing}
    from gmai.eval.report import write_run_outputs

    write_run_outputs(out, report, all_rows)
    return report


def read_prediction_file(path: str | Path) -> list[dict[str, Any]]:
    """JSONL with ``qid`` and ``prediction`` (optional ``benchmark``, ``error``)."""
    from gmai.eval.benchmarks.base import jsonl_rows

    rows = []
    for n, row in jsonl_rows(path):
        if "qid" not in row or ("prediction" not in row and "error" not in row):
            raise ValueError(f"{path}:{n}: each line needs 'qid' and 'prediction'")
        rows.append(row)
    return rows


def score_file(predictions: str | Path, benches: Sequence[BenchSpec], out: str | Path,
               options: EvalOptions | None = None) -> dict[str, Any]:
    """Score an existing prediction file against benchmarks, no model involved."""
    options = options or EvalOptions()
    check_rules(options.rules)
    entries = read_prediction_file(predictions)
    bench_reports, all_rows = {}, []
    for spec in benches:
        items = load_items(spec, options.limit)
        mine = {str(e["qid"]): e for e in entries if e.get("benchmark") in (None, spec.name, spec.label)}
        known = {it.qid for it in items}
        matched = known & set(mine)
        if not matched:
            raise ValueError(f"{predictions}: no prediction matches a {spec.label} question id "
                             f"(e.g. {next(iter(known), '?')!r})")
        rows = score_items(items, {q: mine[q] for q in matched}, effective_rules(options), options.judge)
        all_rows.extend(rows)
        report = benchmark_report(spec, items, rows, options)
        report["unmatched_predictions"] = len(set(mine) - known)
        bench_reports[spec.label] = report
    report = _report_header(f"predictions:{predictions}", options, None) | {"benchmarks": bench_reports}
    from gmai.eval.report import write_run_outputs

    write_run_outputs(Path(out), report, all_rows)
    return report


def _report_header(model: str, options: EvalOptions, config) -> dict[str, Any]:
    from gmai.eval.judge import JUDGE_RULE, JUDGE_RULE_DESCRIPTION

    rules = scoring.describe_rules(options.rules)
    if options.judge is not None:
        rules[JUDGE_RULE] = {"version": 1, "description": JUDGE_RULE_DESCRIPTION, "judge": options.judge.describe()}
    return {"report_version": REPORT_VERSION, "model": model,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "generation": asdict(config) if config is not None else None,
            "prompt_style": options.prompt_style, "image_max_side": options.max_side, "limit": options.limit,
            "rules": rules, "default_rule": DEFAULT_RULE}


class _progress:
    """A Rich progress bar when a console is given, else a no-op; yields ``advance(n)``."""

    def __init__(self, console, label: str, total: int):
        self.console, self.label, self.total, self.bar = console, label, total, None

    def __enter__(self):
        if self.console is None:
            return lambda n: None
        from rich.progress import Progress

        self.bar = Progress(console=self.console, transient=False)
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
