"""The R1 part of ``make demo``: questions -> synthesis with the Stage III teacher -> SFT -> GRPO -> synthesis again
with the R1 model as teacher (the loop's next round) -> evaluation.

:func:`run_r1_demo` is what the main demo calls. It is sized for 2 CPU cores (a few minutes) and
reports what it measured, including what a tiny model cannot show:

- in-distribution: test-split questions from the sources/modalities used in RL (never trained on);
- held-out: questions about a modality excluded from RL altogether (the paper's "RL generalises"
  claim). The modality is chosen automatically (the smallest one with enough images) unless given;
- SFT data provenance: how many chains came from the teacher (rejection-sampled) and how many are
  TEMPLATE chains written from the label (used when the teacher solves nothing, which a tiny
  Stage III model that never saw the ``<think>`` format is expected to do). The table says which.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from gmai import BENCHMARK_RESULTS
from gmai.eval.stats import mcnemar_exact, trend, wilson_interval
from gmai.rl.evaluate import evaluate_checkpoint
from gmai.rl.grpo import R1GRPOConfig, accuracy_keys, read_metrics, train_grpo
from gmai.rl.pipeline import SFTSection, run_sft
from gmai.rl.questions import HELDOUT_FILE, RL_FILE, SFT_POOL_FILE, build_questions, collect, load_questions, matches
from gmai.rl.synth import SYNTH_REPORT, SynthConfig, synthesise
from gmai.train.trainer import DONE_FILE

DEMO_KINDS = ("choice", "closed", "open")  # boxes need longer completions than the CPU demo affords
R1_NAME, STAGE3_NAME = "GRPO (R1)", "Stage III (plain prompt)"
DEMO_REWARDS = {"format": 0.25, "format_partial": 0.25, "accuracy": 1.0}
SUMMARY_FILE, QUESTIONS_SUMMARY, GRPO_SUMMARY = "r1-demo.json", "questions-summary.json", "grpo-summary.json"
# The committed 3-seed sweep of the default setting (``benchmarks/r1_sweep.py --runs default --seeds 0,1,2``), in a
# source checkout; an installed package has no benchmarks/ folder and says so.
SWEEP_FILE = BENCHMARK_RESULTS / "r1_sweep.json"


def choose_heldout_modality(data_dir: str | Path, min_images: int = 40) -> str | None:
    """The modality with the fewest training images but at least ``min_images`` (enough held-out questions
    for a paired test to mean something), so RL keeps the bulk."""
    counts = Counter(f.modality for f in collect(data_dir) if f.modality and f.split == "train")
    candidates = sorted((n, m) for m, n in counts.items() if n >= min_images)
    if len(candidates) < 2:
        return None  # one modality only: nothing can be held out without leaving RL empty
    return candidates[0][1]


def eval_splits(questions_dir: Path, hold_out: dict[str, list[str]], limit: int, seed: int) -> dict[str, list]:
    """in-distribution (other splits, RL modalities) and held-out (excluded modality) question lists.
    When the data has no test split for the RL modalities, in-distribution falls back to a sample of
    the RL training questions and is named ``in-dist (seen in RL)``."""
    rng = random.Random(seed)
    held_file = questions_dir / HELDOUT_FILE
    others = load_questions(held_file) if held_file.stat().st_size else []
    held = [q for q in others if hold_out and matches(q, hold_out)]
    indist = [q for q in others if not (hold_out and matches(q, hold_out))]
    name = "in-dist (unseen test split)"
    if len(indist) < 8:
        indist, name = load_questions(questions_dir / RL_FILE), "in-dist (seen in RL)"

    def sample(qs):
        return rng.sample(qs, limit) if limit and len(qs) > limit else qs

    out = {name: sample(indist)}
    if held:
        out[f"held-out ({', '.join(f'{k}={v}' for k, vs in hold_out.items() for v in vs)})"] = sample(held)
    return out


def _baseline(results: dict[str, dict[str, Any]], split: str) -> str:
    """The stronger Stage III variant on ``split``: R1 has to beat the best the Stage III model can do."""
    stage3 = [name for name in results if name.startswith("Stage III")]
    return max(stage3, key=lambda name: results[name][split]["accuracy"] or 0.0)


def compare(results: dict[str, dict[str, Any]], sft_name: str | None = None) -> dict[str, dict[str, Any]]:
    """Per split: the baseline, every other model's paired McNemar test against it, and (given the SFT
    row's name) GRPO against SFT: what the RL stage itself added."""
    out: dict[str, dict[str, Any]] = {}
    for split in next(iter(results.values())):
        base = _baseline(results, split)
        tests = {name: mcnemar_exact(results[base][split]["correct"], r[split]["correct"])
                 for name, r in results.items() if not name.startswith("Stage III")}
        out[split] = {"baseline": base, "tests": tests}
        if sft_name in results and R1_NAME in results:
            out[split]["grpo_vs_sft"] = mcnemar_exact(results[sft_name][split]["correct"],
                                                      results[R1_NAME][split]["correct"])
    return out


def _table(results: dict[str, dict[str, Any]], comparisons: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for model, splits in results.items():
        row: dict[str, Any] = {"model": model}
        for split, r in splits.items():
            hits = sum(r["correct"])
            low, high = wilson_interval(hits, r["n"])
            row[f"{split} acc [95% CI]"] = f"{r['accuracy']:.3f} [{low:.2f}, {high:.2f}]"
            row[f"{split} format-valid"] = r["format_valid"]
            test = comparisons[split]["tests"].get(model)
            row[f"{split} vs Stage III"] = "baseline" if model == comparisons[split]["baseline"] else (
                f"{test['difference']:+.3f} (+{test['b_only']}/-{test['a_only']}, p={test['p_value']:.2g})"
                if test else "")
        rows.append(row)
    return rows


def _markdown(rows: list[dict[str, Any]], notes: list[str]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(["# GMAI-VL-R1 demo (tiny model, CPU)", "", *lines, "", *[f"- {n}" for n in notes], ""])


def _verdicts(comparisons: dict[str, dict[str, Any]]) -> list[str]:
    """Per split: does the final R1 model beat the Stage III baseline (p < 0.05, paired)? And GRPO vs SFT."""
    lines = []
    for split, c in comparisons.items():
        test = c["tests"].get(R1_NAME)
        if test is None:
            continue
        better = test["difference"] > 0 and test["p_value"] < 0.05
        lines.append(f"{split}: GRPO (R1) {'beats' if better else 'does not significantly beat'} {c['baseline']} "
                     f"({test['difference']:+.3f}, p={test['p_value']:.2g}, n={test['n']})")
        if "grpo_vs_sft" in c:
            g = c["grpo_vs_sft"]
            lines.append(f"{split}: GRPO vs its SFT start {g['difference']:+.3f} (+{g['b_only']}/-{g['a_only']}, "
                         f"p={g['p_value']:.2g}): what the RL stage itself added in this run (one seed)")
    return lines


def cross_seed_notes(sweep_file: Path = SWEEP_FILE, config: str = "default", stage3_ckpt: Path | None = None) -> list[str]:
    """What holds across seeds, from the committed sweep: per split, GRPO minus its SFT start as mean +- sd, in
    how many seeds it was significantly better / worse (p < 0.05), and the verdict that follows. Only a verdict
    shared by every seed is stated as one; anything else is "no consistent effect". With ``stage3_ckpt``, says
    whether this run started from the Stage III weights the sweep started from."""
    if not sweep_file.is_file():
        return ["across seeds: no sweep summary here (benchmarks/results/r1_sweep.json is in the source "
                "repository): the GRPO vs SFT lines below are one run's numbers, not a finding about GRPO"]
    sweep = json.loads(sweep_file.read_text())
    runs = [r for r in sweep.get("runs", []) if r["config"] == config]
    if len(runs) < 2:
        return [f"across seeds: the sweep summary has {len(runs)} run(s) of the {config!r} setting; the GRPO vs "
                "SFT lines below are one run's numbers, not a finding about GRPO"]
    notes = []
    for split in ("in-dist", "held-out"):
        diffs = [(r[f"{split}: GRPO - SFT"], r[f"{split}: p"]) for r in runs if f"{split}: GRPO - SFT" in r]
        if len(diffs) < 2:
            continue
        better = sum(d > 0 and p < 0.05 for d, p in diffs)
        worse = sum(d < 0 and p < 0.05 for d, p in diffs)
        n, values = len(diffs), [d for d, _ in diffs]
        verdict = ("GRPO beats its SFT start in every seed" if better == n else
                   "GRPO loses to its SFT start in every seed" if worse == n else
                   "no consistent effect of GRPO over its SFT start (sign or significance changes between seeds)")
        mean = sum(values) / n
        sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
        notes.append(f"across {n} seeds ({sweep.get('source', 'benchmarks/results/r1_sweep.md')}, the demo's "
                     f"{config!r} setting): {split} GRPO - SFT {mean:+.3f} +- {sd:.3f} (sd), significantly better "
                     f"in {better} / worse in {worse} of {n} seeds: {verdict}")
    notes.append("this run's GRPO vs SFT lines below are one seed's numbers; only the across-seed verdict above "
                 "is a result" + _same_model_note(sweep.get("stage3_sha256"), stage3_ckpt))
    return notes


def _same_model_note(sweep_digest: str | None, stage3_ckpt: Path | None) -> str:
    weights = Path(stage3_ckpt) / "model.safetensors" if stage3_ckpt else None
    if not sweep_digest or weights is None or not weights.is_file():
        return ""
    import hashlib

    same = hashlib.sha256(weights.read_bytes()).hexdigest() == sweep_digest
    return (" (the sweep started from this run's Stage III weights)" if same else
            " (the sweep started from another Stage III model, a committed demo's: its verdict is about the setting)")


def _revisit_note(key: str, r: dict[str, Any]) -> str:
    if not r.get("revisited"):
        return f"GRPO {key}: no question was sampled twice, so no per-question comparison"
    return (f"GRPO {key}, the same {r['revisited']} questions at their first vs last visit: {r['first_visit']:.3f} -> "
            f"{r['last_visit']:.3f} ({r['improved']} up, {r['worsened']} down, Wilcoxon p={r['p_value']:.2g}); "
            f"groups without learning signal {r['zero_signal_first_visit']:.2f} -> {r['zero_signal_last_visit']:.2f}")


def _round2_note(report: dict[str, Any], k: int) -> str:
    """The next round's synthesis, with the R1 model as teacher (the paper's iterative loop)."""
    total = report["by"]["all"]["all"]
    return (f"synthesis again with the R1 model as teacher (the next round of the loop, not trained on here): "
            f"pass@{k} {total[f'pass@{k}']:.2f}, format-valid {total['format_rate']:.0%} of {total['chains']} chains, "
            f"acceptance rate {total['acceptance_rate']:.2f}, {report['teacher_rows']} model-written chains kept "
            f"(synth-round2/R1-SFT.jsonl)")


def _trend_note(name: str, t: dict[str, Any]) -> str:
    if t["slope"] is None:
        return f"{name}: too few steps for a trend"
    low, high = t["slope_ci"]
    verdict = "rises" if t["rises"] else ("falls" if high < 0 else "no significant trend")
    return (f"{name}: first third {t['first_third']:.3f} -> last third {t['last_third']:.3f}; slope {t['slope']:+.4f}"
            f"/step [95% CI {low:+.4f}, {high:+.4f}]: {verdict}")


def _resumed(report: Path, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A sub-step's summary from its report file when a previous run completed it, else from running it."""
    return json.loads(report.read_text()) if report.is_file() else run()


def _start_or_resume(out: Path, settings: dict[str, Any]) -> None:
    """Keep ``out``'s completed sub-steps only when they were made with the same settings; else start afresh."""
    settings_file = out / "r1-settings.json"
    wanted = json.dumps(settings, sort_keys=True, default=str)
    if settings_file.is_file() and settings_file.read_text() != wanted:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(wanted)


def make_questions(data_dir: Path, qdir: Path, s: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """SFT and GRPO get different questions: SFT memorises its few chains, and GRPO rewarded on those same
    questions would have nothing left to learn (its reward curve would only measure memorisation)."""
    hold_out = s["hold_out"]
    if hold_out is None:
        modality = choose_heldout_modality(data_dir)
        hold_out = {"modality": [modality]} if modality else {}
    qsum = _resumed(qdir / QUESTIONS_SUMMARY, lambda: build_questions(
        data_dir, qdir, seed=s["seed"], max_questions=s["sft_questions"] + s["grpo_questions"], kinds=DEMO_KINDS,
        hold_out=hold_out, sft_questions=s["sft_questions"], rl_kinds=s["grpo_kinds"]))
    return qsum, hold_out


def synth_config(s: dict[str, Any]) -> SynthConfig:
    return SynthConfig(k=s["synth_k"], temperature=1.0, max_new_tokens=s["max_new_tokens"], max_per_question=2,
                       batch_size=16, seed=s["seed"], template_fallback=True)


def train_sft(stage3_ckpt: Path, out: Path, s: dict[str, Any], console) -> Path:
    """SFT on the accepted (or template) chains; skipped when ``out/sft/stage3`` is complete."""
    done = out / "sft" / "stage3"
    if (done / DONE_FILE).is_file():
        return done
    return run_sft(stage3_ckpt, out / "synth", out / "sft",
                   SFTSection(epochs=s["sft_epochs"], lr=s["sft_lr"], warmup_ratio=0.1, max_length=512,
                              torch_threads=s["torch_threads"]), s["seed"], console)


def grpo_config(s: dict[str, Any]) -> R1GRPOConfig:
    """Strict format and accuracy as in the paper's lineage, plus shaped format credit (format_partial) so a
    tiny model that half-learnt the tags still gets a learning signal. Epochs, not a step count: every GRPO
    question is sampled again, so each can be compared with itself. beta 0 (no KL term, no reference model) as
    TRL's default and DAPO. Temperature 0.7: at 1.0 the SFT model's samples are only ~40% format-valid while
    its greedy replies are 100%, so GRPO would optimise a policy far from the one evaluated."""
    cfg = R1GRPOConfig(rewards=dict(s["grpo_rewards"] or DEMO_REWARDS), max_steps=0,
                       num_train_epochs=s["grpo_epochs"], learning_rate=s["grpo_lr"], num_generations=4,
                       temperature=s["grpo_temperature"], per_device_train_batch_size=s["grpo_batch"],
                       max_completion_length=s["max_new_tokens"], beta=0.0, answer_types=list(DEMO_KINDS),
                       seed=s["seed"], torch_threads=s["torch_threads"])
    return replace(cfg, **(s["grpo_overrides"] or {}))


def sft_label(synth: dict[str, Any]) -> str:
    if synth["template_rows"] == 0:
        return "SFT on synthesised chains"
    return "SFT on template chains" if synth["teacher_rows"] == 0 else "SFT on teacher + template chains"


def r1_notes(synth, round2, grpo, grpo_cfg, qsum, hold_out, trends, comparisons, synth_k,
             stage3_ckpt: Path | None = None) -> list[str]:
    return [
        "scoring: gmai@1 (gmai.eval.scoring) for every model, greedy replies; SFT and GRPO get the R1 prompt "
        "(question, options, answer hint, format instruction), Stage III the same without the format instruction: "
        f"asked for the format it produced {synth['by']['all']['all']['format_rate']:.0%} format-valid chains in "
        "synthesis",
        "vs Stage III: accuracy difference, questions only this model gets right / only Stage III gets right, "
        "exact McNemar p-value (paired: same questions); 95% Wilson intervals on accuracies",
        f"SFT data: {synth['teacher_rows']} chains sampled from the Stage III teacher and accepted by rejection "
        f"sampling, {synth['template_rows']} TEMPLATE chains written from the label for questions the teacher "
        f"never solved (pass@{synth_k} = {synth['by']['all']['all'][f'pass@{synth_k}']:.2f})",
        _round2_note(round2, synth_k),
        f"GRPO: {grpo['steps']} steps x {grpo_cfg.per_device_train_batch_size} completions (groups of "
        f"{grpo_cfg.num_generations}), {grpo_cfg.num_train_epochs:g} epochs over {qsum['questions']} questions SFT "
        f"never saw, lr {grpo_cfg.learning_rate:g}, temperature {grpo_cfg.temperature:g}; per-step "
        "curves in grpo/metrics.jsonl and grpo/grpo-metrics.png, every question's rewards per visit in "
        "grpo/question_rewards.jsonl",
        *[_trend_note(f"GRPO {key} per step", t) for key, t in trends.items()],
        *[_revisit_note(key, r) for key, r in grpo["revisits"].items()],
        f"held out of RL: {hold_out or 'nothing (a single modality)'}",
        *cross_seed_notes(stage3_ckpt=stage3_ckpt),
        *_verdicts(comparisons),
    ]


def run_r1_demo(stage3_ckpt: str | Path, data_dir: str | Path, out: str | Path, *, hold_out: dict | None = None,
                sft_questions: int = 96, grpo_questions: int = 32, synth_k: int = 4, sft_epochs: float = 6.0,
                sft_lr: float = 1e-3,
                grpo_epochs: float = 4.0, grpo_lr: float = 1e-4, grpo_temperature: float = 0.7, grpo_batch: int = 16,
                grpo_kinds: tuple[str, ...] | None = None, grpo_rewards: dict[str, float] | None = None,
                grpo_overrides: dict[str, Any] | None = None,
                eval_limit: int = 128,
                max_new_tokens: int = 64,
                seed: int = 0, torch_threads: int = 0, console=None) -> dict[str, Any]:
    """Questions from ``data_dir`` (data-engine output), synthesis with ``stage3_ckpt`` as teacher,
    SFT on the accepted (or template) chains, GRPO, then Stage III vs SFT vs GRPO on in-distribution
    and held-out splits. Writes ``OUT/r1-demo.json`` and ``OUT/r1-demo.md``; returns the summary.

    Resumes like the other demo steps: each sub-step (questions, synthesis, SFT, GRPO, round-2 synthesis) is
    skipped when its output is complete, and the whole step when ``OUT/r1-demo.json`` is; outputs made with
    other settings are discarded first (``OUT/r1-settings.json``)."""
    settings = {k: v for k, v in locals().items() if k not in ("out", "console")}
    settings.update(stage3_ckpt=str(stage3_ckpt), data_dir=str(data_dir))
    out, stage3_ckpt, data_dir = Path(out), Path(stage3_ckpt), Path(data_dir)
    _start_or_resume(out, settings)
    if (out / SUMMARY_FILE).is_file():
        return json.loads((out / SUMMARY_FILE).read_text())
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)  # also for synthesis and evaluation (gmai.infer)
    timings: dict[str, float] = {}
    say = console.print if console is not None else (lambda *a, **k: None)
    progress = console is not None

    t = time.perf_counter()
    qdir = out / "questions"
    qsum, hold_out = make_questions(data_dir, qdir, settings)
    timings["questions_s"] = time.perf_counter() - t
    say(f"r1: {qsum['sft_questions']} SFT + {qsum['questions']} GRPO questions, held out {hold_out or 'nothing'} "
        f"({qsum['heldout']} other questions)")

    t = time.perf_counter()
    synth_cfg = synth_config(settings)
    synth = _resumed(out / "synth" / SYNTH_REPORT, lambda: synthesise(
        qdir / SFT_POOL_FILE, str(stage3_ckpt), out / "synth", synth_cfg, show_progress=progress))
    timings["synth_s"] = time.perf_counter() - t
    say(f"r1: synthesis pass@{synth_k} {synth['by']['all']['all'][f'pass@{synth_k}']:.2f}, "
        f"{synth['teacher_rows']} teacher chains + {synth['template_rows']} template chains")

    t = time.perf_counter()
    sft_model = train_sft(stage3_ckpt, out, settings, console)
    timings["sft_s"] = time.perf_counter() - t

    t = time.perf_counter()
    grpo_cfg = grpo_config(settings)
    grpo = _resumed(out / "grpo" / GRPO_SUMMARY, lambda: train_grpo(sft_model, qdir / RL_FILE, out / "grpo", grpo_cfg))
    timings["grpo_s"] = time.perf_counter() - t

    # The paper's loop goes on: synthesise again with the improved model as teacher. Its chains have the format,
    # so rejection sampling now has something to accept (no template fallback here: what is kept is model-written).
    t = time.perf_counter()
    round2 = _resumed(out / "synth-round2" / SYNTH_REPORT, lambda: synthesise(
        qdir / SFT_POOL_FILE, grpo["final"], out / "synth-round2", replace(synth_cfg, template_fallback=False),
        show_progress=progress))
    timings["synth_round2_s"] = time.perf_counter() - t

    t = time.perf_counter()
    splits = eval_splits(qdir, hold_out, eval_limit, seed)
    # Stage III never saw the <think>/<answer> format (synthesis measured it: 0 format-valid chains), so it is
    # scored on its own terms, with the plain prompt; SFT and GRPO get the R1 prompt.
    label = sft_label(synth)
    models = {STAGE3_NAME: stage3_ckpt, label: sft_model, R1_NAME: grpo["final"]}
    results = {name: evaluate_checkpoint(path, splits, max_new_tokens, reasoning_prompt=name != STAGE3_NAME)
               for name, path in models.items()}
    timings["eval_s"] = time.perf_counter() - t

    comparisons = compare(results, label)
    rows = _table(results, comparisons)
    metrics = read_metrics(out / "grpo")
    trend_keys = ("reward", *accuracy_keys(list(grpo_cfg.rewards)), "zero_signal_fraction")
    trends = {key: trend([m.get(key) for m in metrics]) for key in trend_keys}
    notes = r1_notes(synth, round2, grpo, grpo_cfg, qsum, hold_out, trends, comparisons, synth_k, stage3_ckpt)
    summary = {"table": rows, "results": results, "notes": notes,
               "timings_s": {k: round(v, 1) for k, v in timings.items()}, "questions": qsum,
               "synth": {k: synth[k] for k in ("questions", "sft_rows", "teacher_rows", "template_rows")},
               "synth_by": synth["by"],
               "synth_round2": {k: round2[k] for k in ("questions", "sft_rows", "teacher_rows", "template_rows")}
               | {"all": round2["by"]["all"]["all"]},
               "grpo": {k: grpo[k] for k in ("steps", "final", "first", "last", "plots", "vision", "revisits")},
               "models": {k: str(v) for k, v in models.items()}, "hold_out": hold_out,
               "comparisons": comparisons, "trends": trends}
    (out / "r1-demo.md").write_text(_markdown(rows, notes))
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))  # last: the step is complete
    return summary
