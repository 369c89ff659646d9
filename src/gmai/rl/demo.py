"""The R1 part of ``make demo``: questions -> synthesis with the Stage III teacher -> SFT -> GRPO -> evaluation.

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
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gmai.rl.evaluate import evaluate_checkpoint
from gmai.rl.grpo import R1GRPOConfig, train_grpo
from gmai.rl.pipeline import SFTSection, run_sft
from gmai.rl.questions import HELDOUT_FILE, RL_FILE, build_questions, collect, load_questions, matches
from gmai.rl.synth import SynthConfig, synthesise

DEMO_KINDS = ("choice", "closed", "open")  # boxes need longer completions than the CPU demo affords
DEMO_REWARDS = {"format": 0.25, "format_partial": 0.25, "accuracy": 1.0}


def choose_heldout_modality(data_dir: str | Path, min_images: int = 5) -> str | None:
    """The modality with the fewest training images (at least ``min_images``), so RL keeps the bulk."""
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


def _table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for model, splits in results.items():
        row: dict[str, Any] = {"model": model}
        for split, r in splits.items():
            row[f"{split} acc"] = r["accuracy"]
            row[f"{split} format-valid"] = r["format_valid"]
            row[f"{split} n"] = r["n"]
        rows.append(row)
    return rows


def _markdown(rows: list[dict[str, Any]], notes: list[str]) -> str:
    cols = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(["# GMAI-VL-R1 demo (tiny model, CPU)", "", *lines, "", *[f"- {n}" for n in notes], ""])


def run_r1_demo(stage3_ckpt: str | Path, data_dir: str | Path, out: str | Path, *, hold_out: dict | None = None,
                max_questions: int = 96, synth_k: int = 4, sft_epochs: float = 10.0, sft_lr: float = 3e-3,
                grpo_steps: int = 16, grpo_lr: float = 2e-5, grpo_batch: int = 16, eval_limit: int = 32,
                max_new_tokens: int = 64,
                seed: int = 0, torch_threads: int = 0, console=None) -> dict[str, Any]:
    """Questions from ``data_dir`` (data-engine output), synthesis with ``stage3_ckpt`` as teacher,
    SFT on the accepted (or template) chains, GRPO, then Stage III vs SFT vs GRPO on in-distribution
    and held-out splits. Writes ``OUT/r1-demo.json`` and ``OUT/r1-demo.md``; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)  # also for synthesis and evaluation (gmai.infer)
    timings: dict[str, float] = {}
    say = console.print if console is not None else (lambda *a, **k: None)

    t = time.perf_counter()
    if hold_out is None:
        modality = choose_heldout_modality(data_dir)
        hold_out = {"modality": [modality]} if modality else {}
    qdir = out / "questions"
    qsum = build_questions(data_dir, qdir, seed=seed, max_questions=max_questions, kinds=DEMO_KINDS, hold_out=hold_out)
    timings["questions_s"] = time.perf_counter() - t
    say(f"r1: {qsum['questions']} RL questions, held out {hold_out or 'nothing'} ({qsum['heldout']} other questions)")

    t = time.perf_counter()
    synth_cfg = SynthConfig(k=synth_k, temperature=1.0, max_new_tokens=max_new_tokens, max_per_question=2,
                            batch_size=16, seed=seed, template_fallback=True)
    synth = synthesise(qdir / RL_FILE, str(stage3_ckpt), out / "synth", synth_cfg, show_progress=console is not None)
    timings["synth_s"] = time.perf_counter() - t
    say(f"r1: synthesis pass@{synth_k} {synth['by']['all']['all'][f'pass@{synth_k}']:.2f}, "
        f"{synth['teacher_rows']} teacher chains + {synth['template_rows']} template chains")

    t = time.perf_counter()
    sft_model = run_sft(stage3_ckpt, out / "synth", out / "sft",
                        SFTSection(epochs=sft_epochs, lr=sft_lr, warmup_ratio=0.1, max_length=512,
                                   torch_threads=torch_threads), seed, console)
    timings["sft_s"] = time.perf_counter() - t

    t = time.perf_counter()
    # Strict format and accuracy as in the paper's lineage, plus shaped format credit (format_partial) so a
    # tiny model that half-learnt the tags still gets a learning signal.
    grpo_cfg = R1GRPOConfig(rewards=dict(DEMO_REWARDS), max_steps=grpo_steps, learning_rate=grpo_lr, num_generations=4,
                            per_device_train_batch_size=grpo_batch, max_completion_length=max_new_tokens, beta=0.04,
                            answer_types=list(DEMO_KINDS), seed=seed, torch_threads=torch_threads)
    grpo = train_grpo(sft_model, qdir / RL_FILE, out / "grpo", grpo_cfg)
    timings["grpo_s"] = time.perf_counter() - t

    t = time.perf_counter()
    splits = eval_splits(qdir, hold_out, eval_limit, seed)
    sft_label = "SFT on synthesised chains" if synth["template_rows"] == 0 else \
        ("SFT on template chains" if synth["teacher_rows"] == 0 else "SFT on teacher + template chains")
    models = {"Stage III": stage3_ckpt, sft_label: sft_model, "GRPO (R1)": grpo["final"]}
    results = {name: evaluate_checkpoint(path, splits, max_new_tokens) for name, path in models.items()}
    # Stage III never saw the <think>/<answer> instruction: also score it on its own terms.
    results = {"Stage III (plain prompt)": evaluate_checkpoint(stage3_ckpt, splits, max_new_tokens,
                                                               reasoning_prompt=False), **results}
    timings["eval_s"] = time.perf_counter() - t

    rows = _table(results)
    first, last = grpo["first"], grpo["last"]
    notes = [
        "scoring: gmai@1 (gmai.eval.scoring) for every model; same R1 prompt (question, options, answer hint, "
        "format instruction) for every model, plus Stage III with the plain prompt (no format instruction)",
        f"SFT data: {synth['teacher_rows']} chains sampled from the Stage III teacher and accepted by rejection "
        f"sampling, {synth['template_rows']} TEMPLATE chains written from the label for questions the teacher "
        f"never solved (pass@{synth_k} = {synth['by']['all']['all'][f'pass@{synth_k}']:.2f})",
        f"GRPO: {grpo['steps']} steps; reward {first.get('reward')} -> {last.get('reward')}; zero-signal fraction "
        f"{first.get('zero_signal_fraction')} -> {last.get('zero_signal_fraction')} (first -> last step; noisy at "
        f"{grpo_batch} completions per step, see grpo/metrics.jsonl and grpo/grpo-metrics.png)",
        f"held out of RL: {hold_out or 'nothing (a single modality)'}",
        "a tiny model trained for minutes on CPU: differences of a few questions are noise; whether GRPO beats "
        "Stage III on the held-out split is measured here, not assumed",
    ]
    summary = {"table": rows, "results": results, "notes": notes, "timings_s": {k: round(v, 1) for k, v in timings.items()},
               "questions": qsum, "synth": {k: synth[k] for k in ("questions", "sft_rows", "teacher_rows", "template_rows")},
               "synth_by": synth["by"], "grpo": {k: grpo[k] for k in ("steps", "final", "first", "last", "plots", "vision")},
               "models": {k: str(v) for k, v in models.items()}, "hold_out": hold_out}
    (out / "r1-demo.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "r1-demo.md").write_text(_markdown(rows, notes))
    return summary
