"""Seconds per GRPO step and peak memory: our recipe vs TRL's GRPOTrainer, same tiny model and prompts.

Configurations (each in its own subprocess, so peak RSS is per configuration):

- ``trl-defaults``: stock ``trl.GRPOTrainer`` with ``GRPOConfig`` defaults (8 generations, 512
  completion tokens, beta 0, dapo loss) and only the CPU-mandatory overrides (``use_cpu``, no bf16).
- ``trl-stock@recipe``: stock ``GRPOTrainer`` with ``R1GRPOConfig``'s defaults (4 generations, 48 tokens,
  beta 0.04, 8 completions per step; r1-tiny.yaml now runs beta 0, which only removes the reference model's
  pass from both sides). The baseline for the optimisation.
- ``ours@recipe``: ``gmai.rl.grpo.R1GRPOTrainer`` (same settings) with the image + prompt prefilled
  once per group in generation (KV cache shared) and vision features shared in the log-prob passes.

For a fair comparison of the two ``@recipe`` runs every completion is forced to the full length
(``min_new_tokens = max_completion_length``), so both generate the same number of tokens per step.
The first step (warm-up) is excluded from the median. Stock and ours are run in ``--repeats`` rounds (default 3),
the order alternating, because other processes on a shared machine make single timings noisy; every round is
kept, peak memory is the median of the rounds.

The only ratio is between the two ``@recipe`` rows (same settings). ``trl-defaults`` runs other settings (8
generations of up to 512 tokens, vs 4 of 48): its row says what TRL's defaults cost per step, and no ratio
against it is computed (a ratio across different settings measures the settings, not the trainer).

    python benchmarks/grpo_step.py --steps 4 --repeats 3 --threads 1 --json benchmarks/results/grpo_step.json

On a shared, oversubscribed machine wall seconds swing by 2-3x from step to step; with ``--threads 1``
the per-step CPU seconds (``benchmarks/measure.py``) measure the work done and are reported beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_seconds, machine, peak_rss_mb  # noqa: E402


def prepare(work: Path) -> tuple[Path, Path]:
    """A tiny checkpoint and RL questions from the synthetic (drawn-shapes) corpus."""
    from gmai.model import create_model, save_checkpoint
    from gmai.rl.questions import RL_FILE, SFT_FILE, build_questions
    from gmai.train.fixtures import write_synthetic_corpus

    corpus = write_synthetic_corpus(work / "corpus", n_images=24, seed=0)
    build_questions(corpus, work / "q", kinds=("choice", "closed"), seed=0)
    texts = [json.loads(line)["conversations"][0]["value"] + " " + json.loads(line)["conversations"][1]["value"]
             for line in (work / "q" / SFT_FILE).read_text().splitlines()]
    model, processor = create_model("tiny", corpus=texts * 3, seed=0)
    return save_checkpoint(model, processor, work / "tiny"), work / "q" / RL_FILE


def run_one(kind: str, ckpt: str, questions: str, steps: int, out: str, threads: int = 0) -> dict:
    """One configuration in this process: per-step seconds, completion lengths, peak RSS."""
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from gmai.model.factory import load_checkpoint
    from gmai.rl.grpo import R1GRPOConfig, R1GRPOTrainer, rl_dataset
    from gmai.rl.rewards import get_rewards

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    times, cpu_times, lengths = [], [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t, self.c = time.perf_counter(), cpu_seconds()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)
            cpu_times.append(cpu_seconds() - self.c)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    model, processor = load_checkpoint(ckpt)
    recipe = R1GRPOConfig(max_steps=steps, answer_types=["choice", "closed"], plot=False)
    funcs, weights, _ = get_rewards(recipe.rewards)
    dataset = rl_dataset(questions, answer_types=recipe.answer_types)
    if kind == "trl-defaults":
        args = GRPOConfig(output_dir=out, use_cpu=True, bf16=False, max_steps=steps, report_to=[], save_strategy="no",
                          logging_steps=1, reward_weights=weights, seed=0)
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                              processing_class=processor, callbacks=[Timer()])
    else:
        args = recipe.trl_config(Path(out), use_cpu=True)
        args.generation_kwargs = {"min_new_tokens": recipe.max_completion_length}
        cls, extra = (GRPOTrainer, {}) if kind == "trl-stock@recipe" else (R1GRPOTrainer, {"cache_vision": True})
        trainer = cls(model=model, reward_funcs=funcs, args=args, train_dataset=dataset, processing_class=processor,
                      callbacks=[Timer()], **extra)
    trainer.train()
    peak_mb = peak_rss_mb()
    return {"kind": kind, "step_s": times, "median_step_s": statistics.median(times[1:] or times),
            "step_cpu_s": cpu_times, "median_step_cpu_s": statistics.median(cpu_times[1:] or cpu_times),
            "completion_length": lengths, "num_generations": args.num_generations,
            "completions_per_step": args.per_device_train_batch_size, "max_completion_length": args.max_completion_length,
            "beta": args.beta, "peak_rss_mb": round(peak_mb, 1), "torch_threads": torch.get_num_threads(),
            "vision": trainer.vision_stats() if hasattr(trainer, "vision_stats") else {}}


def spawn(kind: str, ckpt: Path, questions: Path, steps: int, work: Path, threads: int) -> dict:
    result = work / f"{kind}-{time.time_ns()}.json"
    cmd = [sys.executable, __file__, "--child", kind, "--ckpt", str(ckpt), "--questions", str(questions),
           "--steps", str(steps), "--result", str(result), "--threads", str(threads)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(result.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--default-steps", type=int, default=2, help="steps for the (slow) TRL-defaults run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-defaults", action="store_true")
    ap.add_argument("--json", default="benchmarks/results/grpo_step.json")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per run (0 = torch default); 1 makes CPU seconds a clean work measure")
    ap.add_argument("--child")
    ap.add_argument("--ckpt")
    ap.add_argument("--questions")
    ap.add_argument("--result")
    args = ap.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as out:
            Path(args.result).write_text(json.dumps(run_one(args.child, args.ckpt, args.questions, args.steps, out, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt, questions = prepare(work)
        runs = []
        for r in range(args.repeats):
            order = ["trl-stock@recipe", "ours@recipe"] if r % 2 == 0 else ["ours@recipe", "trl-stock@recipe"]
            runs += [spawn(kind, ckpt, questions, args.steps, work, args.threads) for kind in order]
        if not args.skip_defaults:
            runs.append(spawn("trl-defaults", ckpt, questions, args.default_steps, work, args.threads))
    report = summarise(runs)
    report["machine"] = machine() | {"threads": args.threads}
    print_table(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))


def summarise(runs: list[dict]) -> dict:
    by_kind: dict[str, list[dict]] = {}
    for run in runs:
        by_kind.setdefault(run["kind"], []).append(run)
    rows = {}
    for kind, group in by_kind.items():
        steps = [s for run in group for s in (run["step_s"][1:] or run["step_s"])]
        cpu = [s for run in group for s in (run["step_cpu_s"][1:] or run["step_cpu_s"])]
        rows[kind] = {"median_step_s": statistics.median(steps), "median_step_cpu_s": statistics.median(cpu),
                      "steps_timed": len(steps),
                      "peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in group),
                      "rounds": len(group),
                      "completions_per_step": group[0]["completions_per_step"],
                      "num_generations": group[0]["num_generations"],
                      "max_completion_length": group[0]["max_completion_length"],
                      "mean_completion_length": statistics.mean(x for run in group for x in run["completion_length"]),
                      "runs": group}
    report = {"rows": rows}
    if "trl-stock@recipe" in rows and "ours@recipe" in rows:
        report["speedup_ours_vs_stock_same_settings"] = rows["trl-stock@recipe"]["median_step_s"] / rows["ours@recipe"]["median_step_s"]
        report["cpu_speedup_ours_vs_stock_same_settings"] = (rows["trl-stock@recipe"]["median_step_cpu_s"]
                                                             / rows["ours@recipe"]["median_step_cpu_s"])
    if "trl-defaults" in rows:
        rows["trl-defaults"]["note"] = "other settings (G=8, up to 512 tokens): no ratio against the @recipe rows"
    return report


def print_table(report: dict) -> None:
    print(f"{'config':<20} {'s/step':>8} {'cpu s/step':>10} {'peak MB':>8} {'G':>3} {'compl/step':>10} {'max len':>8} "
          f"{'mean len':>8}")
    for kind, r in report["rows"].items():
        print(f"{kind:<20} {r['median_step_s']:>8.2f} {r['median_step_cpu_s']:>10.2f} {r['peak_rss_mb']:>8.0f} {r['num_generations']:>3} "
              f"{r['completions_per_step']:>10} {r['max_completion_length']:>8} {r['mean_completion_length']:>8.1f}")
    for key in ("speedup_ours_vs_stock_same_settings", "cpu_speedup_ours_vs_stock_same_settings"):
        if key in report:
            print(f"{key}: {report[key]:.2f}x")
    if "trl-defaults" in report["rows"]:
        print("trl-defaults: " + report["rows"]["trl-defaults"]["note"])
    print(f"load averages {report['machine']['load_avg']}: {report['machine']['note']}")


if __name__ == "__main__":
    main()
