"""How robust is the R1 demo's GRPO result? The same Stage III model and corpus, several GRPO settings.

    python benchmarks/r1_sweep.py --demo-out demo-out [--runs default,choice,...] [--work runs/r1-sweep]
    python benchmarks/r1_sweep.py --summarise-only --work runs/r1-sweep

Each configuration is one :func:`gmai.rl.demo.run_r1_demo` (questions -> synthesis -> SFT -> GRPO -> evaluation,
~4-6 minutes on 2 cores) from ``DEMO_OUT/train/stage3`` on ``DEMO_OUT/data``; a run folder that already holds
``r1-demo.json`` is summarised, not rerun. The table gives, per configuration, what GRPO added over its own SFT
start (accuracy difference and exact McNemar p on the in-distribution and held-out splits), the R1 model's
format-valid rate, and the per-step trends of the reward and of the zero-signal fraction (slope with a 95% CI).
Writes ``benchmarks/results/r1_sweep.{json,md}`` (``--out``); the JSON (``runs``, ``across_seeds``, and the
Stage III weights' SHA-256) is what the demo's R1 notes read (:func:`gmai.rl.demo.cross_seed_notes`).

Seeds (``--seeds 0,1,2``): each configuration runs once per seed (``seed`` of ``run_r1_demo``: questions, synthesis,
SFT and GRPO sampling); seed 0 is the configuration's own folder, seed k its ``-seedk`` folder. Configurations
with several seeds get a second table: GRPO - SFT per split as mean +- sd over the seeds, and in how many seeds
it is significantly positive / negative. At this size one seed's sign does not carry over to another machine or
seed, so only what holds across seeds should be read as a result (the demo's R1 notes say so).

Configurations differ from ``default`` (the ``make demo`` setting) only in what their kwargs name:
GRPO's question kinds, question count, epochs, batch, rewards (``accuracy_strict``: no accuracy credit without
the format), temperature and TRL loss type.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STRICT = {"format": 0.25, "format_partial": 0.25, "accuracy_strict": 1.0}
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "choice": {"grpo_kinds": ["choice"]},
    # these four ran two at a time, one torch thread each (numerics differ slightly from 2 threads)
    "choice-16q-10ep": {"grpo_kinds": ["choice"], "grpo_questions": 16, "grpo_epochs": 10, "torch_threads": 1},
    "choice-32q-8ep": {"grpo_kinds": ["choice"], "grpo_questions": 32, "grpo_epochs": 8, "torch_threads": 1},
    "choice-16q-10ep-strict": {"grpo_kinds": ["choice"], "grpo_questions": 16, "grpo_epochs": 10,
                               "grpo_rewards": STRICT, "torch_threads": 1},
    "all-16q-10ep-strict": {"grpo_questions": 16, "grpo_epochs": 10, "grpo_rewards": STRICT, "torch_threads": 1},
    "choice-10ep-batch64-strict-dapo": {"grpo_kinds": ["choice"], "grpo_epochs": 10, "grpo_batch": 64,
                                        "grpo_rewards": {"format": 0.5, "accuracy_strict": 1.0},
                                        "grpo_overrides": {"loss_type": "dapo"}},
}


def run_folder(work: Path, name: str, seed: int) -> Path:
    return work / (name if seed == 0 else f"{name}-seed{seed}")


def run(name: str, demo_out: Path, work: Path, threads: int, seed: int = 0) -> Path:
    from gmai.rl.demo import run_r1_demo

    out = run_folder(work, name, seed)
    if not (out / "r1-demo.json").exists():
        kwargs = dict(CONFIGS[name])
        if "grpo_kinds" in kwargs:
            kwargs["grpo_kinds"] = tuple(kwargs["grpo_kinds"])
        kwargs.setdefault("torch_threads", threads)
        run_r1_demo(demo_out / "train" / "stage3", demo_out / "data", out, seed=seed, **kwargs)
    return out


def across_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration run with >= 2 seeds: GRPO - SFT per split as mean +- sd, and the seeds' verdicts."""
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_config.setdefault(r["config"], []).append(r)
    out = []
    for name, runs in by_config.items():
        if len(runs) < 2:
            continue
        row: dict[str, Any] = {"config": name, "seeds": [r["seed"] for r in runs]}
        for split in ("in-dist", "held-out"):
            diffs = [r[f"{split}: GRPO - SFT"] for r in runs if f"{split}: GRPO - SFT" in r]
            if len(diffs) < 2:
                continue
            up = sum(d > 0 and r[f"{split}: p"] < 0.05 for d, r in zip(diffs, runs))
            down = sum(d < 0 and r[f"{split}: p"] < 0.05 for d, r in zip(diffs, runs))
            row[f"{split}: GRPO - SFT mean +- sd"] = f"{statistics.mean(diffs):+.3f} +- {statistics.stdev(diffs):.3f}"
            row[f"{split}: seeds better / worse (p < 0.05)"] = f"{up} / {down} of {len(diffs)}"
        out.append(row)
    return out


def summarise(name: str, out: Path, seed: int = 0) -> dict[str, Any]:
    demo = json.loads((out / "r1-demo.json").read_text())
    row: dict[str, Any] = {"config": name, "seed": seed, "kwargs": CONFIGS.get(name, {})}
    for split, comparison in demo["comparisons"].items():
        short = "held-out" if split.startswith("held-out") else "in-dist"
        vs_sft = comparison["grpo_vs_sft"]
        row[f"{short}: GRPO - SFT"] = vs_sft["difference"]
        row[f"{short}: p"] = vs_sft["p_value"]
        row[f"{short}: GRPO format-valid"] = demo["results"]["GRPO (R1)"][split]["format_valid"]
    for key in ("reward", "zero_signal_fraction"):
        t = demo["trends"].get(key) or {}
        row[f"{key} slope/step"] = t.get("slope")
        row[f"{key} 95% CI"] = t.get("slope_ci")
    return row


def _fmt(value: Any, column: str) -> str:
    if isinstance(value, float) and column.endswith(": p"):
        return f"{value:.2g}"
    if isinstance(value, float):
        return f"{value:.3f}" if "format-valid" in column else f"{value:+.4f}"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) if isinstance(v, int) else f"{v:+.4f}" for v in value) + "]"
    return "-" if value is None else str(value)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Counts over runs (configuration x seed): where GRPO beat / lost to its SFT start (p < 0.05), and where the per-step
    zero-signal fraction fell / rose (95% CI of the slope entirely below / above 0)."""
    n, out = len(rows), []
    for split in ("in-dist", "held-out"):
        better = sum(r[f"{split}: GRPO - SFT"] > 0 and r[f"{split}: p"] < 0.05 for r in rows)
        worse = sum(r[f"{split}: GRPO - SFT"] < 0 and r[f"{split}: p"] < 0.05 for r in rows)
        out.append(f"- {split}: GRPO beats its SFT start (p < 0.05) in {better} of {n} runs, loses to it in {worse}")
    for key in ("reward", "zero_signal_fraction"):
        cis = [r[f"{key} 95% CI"] for r in rows if r.get(f"{key} 95% CI")]
        falls, rises = sum(ci[1] < 0 for ci in cis), sum(ci[0] > 0 for ci in cis)
        out.append(f"- {key} per step: falls in {falls}, rises in {rises}, no significant trend in "
                   f"{len(cis) - falls - rises} of {len(cis)} runs")
    return out


def _table(rows: list[dict[str, Any]]) -> list[str]:
    cols = list(dict.fromkeys(c for r in rows for c in r if c != "kwargs"))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(_fmt(r.get(c), c) for c in cols) + " |" for r in rows]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [*_table(rows), "", *verdicts(rows)]
    seeds = across_seeds(rows)
    if seeds:
        lines += ["", "Across seeds (what a single run cannot show):", "", *_table(seeds)]
    lines += ["", "kwargs of `gmai.rl.demo.run_r1_demo` per configuration (`default` = `make demo`):", ""]
    lines += [f"- `{name}`: `{json.dumps(CONFIGS.get(name, {}))}`" for name in dict.fromkeys(r["config"] for r in rows)]
    return "\n".join(lines) + "\n"


def stage3_digest(demo_out: Path) -> str | None:
    """Which Stage III model the sweep started from (its weights' SHA-256): a sweep holds for that model."""
    import hashlib

    weights = demo_out / "train" / "stage3" / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-out", type=Path, default=ROOT / "demo-out", help="a finished `make demo` output")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "r1-sweep")
    parser.add_argument("--runs", default=",".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds per configuration (e.g. 0,1,2)")
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--note", default="", help="provenance line for the table (which demo, how it was run)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "r1_sweep")
    args = parser.parse_args()
    rows = []
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    for name in [n.strip() for n in args.runs.split(",") if n.strip()]:
        if name not in CONFIGS:
            raise SystemExit(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}")
        for seed in seeds:
            out = run_folder(args.work, name, seed) if args.summarise_only else \
                run(name, args.demo_out, args.work, args.threads, seed)
            if (out / "r1-demo.json").exists():
                rows.append(summarise(name, out, seed))
    if not rows:
        raise SystemExit(f"no finished runs under {args.work}")
    digest = stage3_digest(args.demo_out)
    text = (f"Stage III: `{args.demo_out}/train/stage3` (weights SHA-256 {str(digest)[:16]}...). {args.note}\n\n"
            + markdown(rows))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"source": "benchmarks/results/r1_sweep.md", "demo_out": str(args.demo_out),
               "stage3_sha256": digest, "note": args.note, "runs": rows, "across_seeds": across_seeds(rows)}
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
