"""Stage III training throughput: gmai's trainer (packing) vs TRL's ``SFTTrainer``, twice:

- ``trl-defaults``: ``SFTConfig`` defaults, what a user gets (gradient checkpointing on, loss on every token,
  batch 8), with only what the stack notes require on CPU (``use_cpu=True``, ``bf16=False``);
- ``trl-best``: TRL's best configuration for gmai's objective: loss on assistant tokens only
  (``assistant_only_loss=True``: gmai's chat template has the ``{% generation %}`` markers it needs), no gradient
  checkpointing, and a batch size giving the optimizer-step count closest to gmai's (same learning-rate schedule
  granularity). TRL 1.16 refuses packing and padding-free for vision datasets ("Packing is not supported for
  vision datasets"), so it pads every batch to its longest sample.

Same model (the ``tiny`` preset, one saved checkpoint every side starts from), same samples (the Stage III
mixture after the quality filter, written once as JSONL + PNG files), one epoch each (the same tokens), same
learning rate, no warm-up. Each side runs in its own subprocess, so its peak memory (max RSS) is its own.
Timed window: from "model + data on disk" to "trained"; image decoding, tokenisation and collation are inside it
on every side, each decoding the same PNG files per sample; TRL's ``datasets.Dataset`` (whose construction
re-encodes the images as PNG) is built before the window; checkpoint saving is outside it on every side.

    python benchmarks/train_throughput.py [--data DIR ...] [--max-samples 480] [--threads 2] [--rounds 3]

Rounds: every side once per round, the order rotating between rounds; the table gives the median and every
round, peak memory as the median of the rounds; ratios are only between sides of the same workload. CPU seconds
and load averages: ``benchmarks/measure.py``.

Without --data the samples come from a SYNTHETIC corpus (gmai.train.fixtures: drawn shapes, captions of
varied length, reports, Q&A) - said so in the output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/measure.py, also in the child processes
from measure import Window, interleaved_rounds, machine, peak_rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIXTURE = {"general_caption": 0.5, "core_med_caption": 1.0, "other_med_caption": 0.05, "report": 0.3,
           "general_instruction": 0.75, "core_med_instruction": 1.0, "other_med_instruction": 0.1}


def stage3_samples(data_dirs: list[str], max_samples: int, seed: int = 0):
    """The Stage III mixture of the tiny recipe (text-only rows left out: TRL's VLM collator needs images)."""
    import random

    from gmai.train.config import load_recipe
    from gmai.train.data import load_samples, quality_filter, sample_mixture

    cfg = load_recipe(ROOT / "recipes" / "tiny.yaml")
    samples, _ = load_samples(data_dirs, cfg.data)
    samples = [s for s in samples if s.image is not None]
    chosen, _ = sample_mixture(samples, MIXTURE, seed)
    chosen, _ = quality_filter(chosen, cfg.data)
    random.Random(seed).shuffle(chosen)
    return cfg, chosen[:max_samples]


# ------------------------------------------------------------------ the sides (each in its own subprocess)

def preload_libraries(side: str) -> None:
    """Library imports, before either side's window: TRL's side imports its classes at the top of ``run_trl``,
    while gmai's trainer imports torch, accelerate and the model classes lazily, inside ``train()`` (~5 s of its
    window in the first profile). Both sides get the model, processor and accelerate modules warm, and each its
    own trainer package."""
    import accelerate  # noqa: F401
    import transformers.models.clip.modeling_clip  # noqa: F401
    import transformers.models.llava.modeling_llava  # noqa: F401
    import transformers.models.llava.processing_llava  # noqa: F401
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaImageProcessorPil  # noqa: F401

    if side == "ours":
        import gmai.model.factory  # noqa: F401
        import gmai.model.families  # noqa: F401
        import gmai.model.freeze  # noqa: F401
        import gmai.train.trainer  # noqa: F401
    else:
        import trl  # noqa: F401
        from trl import SFTConfig, SFTTrainer  # noqa: F401


def run_ours(args) -> dict:
    from gmai.train.config import config_from_dict
    from gmai.train.trainer import train

    tree = {"model": {"init_from": args.model},
            "data": {"subsets": ["bench"], "groups": [], "default_group": "all", "min_caption_words": 0},
            "run": {"seed": 0, "torch_threads": args.threads, "tensorboard": False, "plot": False},
            "stages": {3: {"name": "bench stage III", "trainable": ["projector", "vision", "llm"], "lr": 2e-5,
                           "epochs": 1, "per_device_batch_size": args.our_batch_rows,
                           "grad_accum": args.our_grad_accum, "max_length": args.our_max_length,
                           "packing": True, "warmup_ratio": 0.0, "mixture": {"all": 1.0}}}}
    with Window() as window:
        summary = train(config_from_dict(tree), args.bench_data, args.out, stages=[3])
    info = summary[3]
    save_s = json.loads((Path(args.out) / "metrics.jsonl").read_text().splitlines()[-1]).get("save_s", 0.0)
    return {"wall_s": window.wall_s - save_s, "cpu_s": window.cpu_s, "tokens": info["tokens"],
            "samples": info["samples"], "steps": info["steps"], "first_loss": info["first_loss"],
            "last_loss": info["last_loss"]}


def to_messages(row: dict) -> list[dict]:
    """A LLaVA JSONL row as TRL's conversational VLM format (the image placed first in the first user turn)."""
    msgs, placed = [], False
    for turn in row["conversations"]:
        role = "user" if turn["from"] == "human" else "assistant"
        text = turn["value"].replace("<image>\n", "").replace("<image>", "")
        content = [{"type": "text", "text": text}]
        if role == "user" and not placed:
            content.insert(0, {"type": "image"})
            placed = True
        msgs.append({"role": role, "content": content})
    return msgs


def trl_config(args):
    """``trl-defaults``: SFTConfig's defaults; ``trl-best``: assistant-only loss, no gradient checkpointing,
    ``--trl-batch`` samples per step (set by the parent to match gmai's optimizer-step count)."""
    from trl import SFTConfig

    common = dict(output_dir=args.out, use_cpu=True, bf16=False, num_train_epochs=1, save_strategy="no",
                  report_to=[], logging_steps=10, learning_rate=2e-5, dataloader_num_workers=0, disable_tqdm=True)
    if args.child == "trl-defaults":
        return SFTConfig(**common)
    return SFTConfig(**common, assistant_only_loss=True, gradient_checkpointing=False,
                     per_device_train_batch_size=args.trl_batch)


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTTrainer

    torch.set_num_threads(args.threads)
    rows = [json.loads(x) for x in (Path(args.bench_data) / "bench.jsonl").read_text().splitlines()]
    # Built before the window: datasets re-encodes every PIL image as PNG here; samples decode them again when
    # read, inside the window, as ours decodes its PNG files.
    data = Dataset.from_list([{"messages": to_messages(r),
                               "images": [Image.open(Path(args.bench_data) / r["image"]).convert("RGB")]}
                              for r in rows])
    config = trl_config(args)
    with Window() as window:
        processor = AutoProcessor.from_pretrained(args.model)
        model = AutoModelForImageTextToText.from_pretrained(args.model)
        trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=processor)
        result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"wall_s": window.wall_s, "cpu_s": window.cpu_s, "steps": result.global_step, "samples": len(rows),
            "train_loss": result.training_loss, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "config": {"gradient_checkpointing": config.gradient_checkpointing,
                       "assistant_only_loss": config.assistant_only_loss,
                       "per_device_train_batch_size": config.per_device_train_batch_size}}


# ------------------------------------------------------------------ orchestration

def count_tokens(model_dir: str, bench_dir: Path) -> int:
    """Non-padding tokens of the epoch, rendered with the checkpoint's own template (same for both sides)."""
    from gmai.model import load_checkpoint
    from gmai.train.config import DataArgs
    from gmai.train.data import load_samples
    from gmai.train.packing import Encoder

    _, processor = load_checkpoint(model_dir)
    samples, _ = load_samples(bench_dir, DataArgs(subsets=["bench"]))
    encoder = Encoder(processor)
    return sum(len(encoder.encode(s)) for s in samples)


def child(side: str, args, r: int = 0, profile: str = "") -> dict:
    # a fresh folder per round: gmai's trainer resumes a folder whose stage is complete (it would skip the work)
    out = Path(args.work) / f"{side}-round{r}{'-profile' if profile else ''}"
    cmd = [sys.executable, __file__, "--child", side, "--model", args.model, "--bench-data", str(args.bench_data),
           "--out", str(out), "--threads", str(args.threads), "--profile-to", profile,
           "--our-batch-rows", str(args.our_batch_rows), "--our-grad-accum", str(args.our_grad_accum),
           "--our-max-length", str(args.our_max_length), "--trl-batch", str(args.trl_batch)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"failed": True, "error": proc.stderr[-3000:]}
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def batch_for_steps(samples: int, steps: int) -> int:
    """The per-step batch whose one-epoch step count (ceil(samples / batch)) is closest to ``steps``."""
    return min(range(1, samples + 1), key=lambda b: (abs(math.ceil(samples / b) - steps), b))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", default=[], help="data folder(s) from `gmai data build`")
    p.add_argument("--max-samples", type=int, default=480)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    # 256-token rows, as the tiny recipe packs (recipes/tiny.yaml); 512-token rows cost more attention per token
    # (results/train_throughput.json before this default: 0.95x TRL best per CPU-second, vs 1.04x at 256)
    p.add_argument("--our-max-length", type=int, default=256, help="packed row length (ours)")
    p.add_argument("--our-batch-rows", type=int, default=4, help="packed rows per micro-batch (ours)")
    p.add_argument("--our-grad-accum", type=int, default=2, help="micro-batches per optimizer step (ours)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "train_throughput.json"))
    # child-process arguments
    p.add_argument("--child", default="")
    p.add_argument("--model", default="")
    p.add_argument("--bench-data", default="")
    p.add_argument("--out", default="")
    p.add_argument("--trl-batch", type=int, default=8)
    p.add_argument("--profile", action="store_true",
                   help="after the rounds, one more (untimed) gmai run under cProfile: where its time goes")
    p.add_argument("--op-profile", action="store_true",
                   help="after the rounds, one more (untimed) run of gmai and of trl-best under torch.profiler: "
                        "CPU time per operator (results/train_throughput_ops_{side}.txt)")
    p.add_argument("--profile-to", default="")
    return p.parse_args()


def run_child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    preload_libraries(args.child)
    side = run_ours if args.child == "ours" else run_trl
    if args.profile_to.endswith(".ops.txt"):
        result = op_profile(side, args)
    elif args.profile_to:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(side, args)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        Path(args.profile_to).write_text(text.getvalue())
    else:
        result = side(args)
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result))


def op_profile(side, args) -> dict:
    """One run under ``torch.profiler``: CPU time per operator (self time; forward and backward ops apart),
    written to ``--profile-to``: where a side's training time goes, op by op."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = side(args)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=48)
    Path(args.profile_to).write_text(f"{args.child}: one untimed run under torch.profiler (wall {result['wall_s']:.1f} s "
                                     f"with the profiler's overhead)\n{table}")
    return result


def write_bench_data(samples, bench: Path) -> None:
    """One JSONL + copied images: every side reads the same bytes."""
    (bench / "images").mkdir(parents=True)
    with open(bench / "bench.jsonl", "w") as fh:
        for i, s in enumerate(samples):
            dst = bench / "images" / f"{i:05d}{s.image.suffix}"
            dst.write_bytes(s.image.read_bytes())
            conv = [{"from": "human" if m["role"] == "user" else "gpt",
                     "value": ("<image>\n" if j == 0 else "") + m["content"]} for j, m in enumerate(s.messages)]
            fh.write(json.dumps({"id": f"bench-{i}", "image": f"images/{dst.name}", "conversations": conv}) + "\n")


SIDES = ("ours", "trl-defaults", "trl-best")
NAMES = {"ours": "gmai trainer (packing, assistant-only loss)", "trl-defaults": "TRL SFTTrainer (defaults)",
         "trl-best": "TRL SFTTrainer (assistant-only, no grad ckpt)"}


def run_rounds(args, samples: int, tokens: int) -> dict[str, list[dict]]:
    def run(side: str, r: int) -> dict:
        if side == "trl-best":  # ours runs first in round 0 (the order rotates from there)
            args.trl_batch = batch_for_steps(samples, steps_of_ours[0]) if steps_of_ours else 8
        print(f"round {r}: {side} ...", flush=True)
        result = child(side, args, r)
        if side == "ours" and not result.get("failed"):
            steps_of_ours.append(result["steps"])
        if not result.get("failed"):
            used = result.get("tokens", tokens)  # ours drops an incomplete last global batch: its own count
            result["tokens_per_s"], result["tokens_per_cpu_s"] = used / result["wall_s"], used / result["cpu_s"]
        return result

    steps_of_ours: list[int] = []
    return interleaved_rounds(SIDES, args.rounds, run)


def write_op_profiles(args, samples: int, rounds: dict[str, list[dict]]) -> None:
    steps = [r["steps"] for r in rounds["ours"] if not r.get("failed")]
    args.trl_batch = batch_for_steps(samples, steps[0]) if steps else 8
    for side in ("ours", "trl-best"):
        child(side, args, 0, str(Path(args.json).with_name(f"train_throughput_ops_{side}.ops.txt")))


def summarise(rounds: dict[str, list[dict]]) -> dict[str, dict]:
    rows = {}
    for side, runs in rounds.items():
        ok = [r for r in runs if not r.get("failed")]
        if not ok:
            rows[side] = {"failed_rounds": len(runs)}
            continue
        med = lambda key: statistics.median(r[key] for r in ok)  # noqa: E731
        rows[side] = {"steps": ok[0]["steps"], "median_wall_s": med("wall_s"), "median_cpu_s": med("cpu_s"),
                      "median_tokens_per_s": med("tokens_per_s"), "median_tokens_per_cpu_s": med("tokens_per_cpu_s"),
                      "median_peak_rss_mb": med("peak_rss_mb"), "failed_rounds": len(runs) - len(ok)}
    for base in ("trl-defaults", "trl-best"):
        if "median_wall_s" in rows.get(base, {}) and "median_wall_s" in rows.get("ours", {}):
            rows["ours"][f"speedup_vs_{base}"] = rows["ours"]["median_tokens_per_s"] / rows[base]["median_tokens_per_s"]
            rows["ours"][f"cpu_speedup_vs_{base}"] = (rows["ours"]["median_tokens_per_cpu_s"]
                                                      / rows[base]["median_tokens_per_cpu_s"])
            rows["ours"][f"peak_rss_ratio_vs_{base}"] = (rows["ours"]["median_peak_rss_mb"]
                                                         / rows[base]["median_peak_rss_mb"])
    return rows


def print_table(report: dict) -> None:
    print(f"\nStage III, tiny preset, {report['samples']} samples ({report['source']}), {report['tokens']} tokens, "
          f"{report['threads']} threads, {report['rounds_count']} rounds; {report['machine']['note']}")
    print(f"{'side':46s} {'steps':>6s} {'wall s':>8s} {'tokens/s':>9s} {'CPU s':>7s} {'tok/CPU-s':>10s} "
          f"{'peak RSS MB':>12s}   (medians)")
    for side, r in report["summary"].items():
        if "median_wall_s" not in r:
            print(f"{NAMES[side]:46s} FAILED in every round")
            continue
        print(f"{NAMES[side]:46s} {r['steps']:>6d} {r['median_wall_s']:>8.1f} {r['median_tokens_per_s']:>9.0f} "
              f"{r['median_cpu_s']:>7.1f} {r['median_tokens_per_cpu_s']:>10.0f} {r['median_peak_rss_mb']:>12.0f}")
        every = ", ".join("failed" if x.get("failed") else f"{x['wall_s']:.1f}/{x['cpu_s']:.1f}"
                          for x in report["rounds"][side])
        print(f"{'':46s} every round, wall/CPU s: {every}")
    ours = report["summary"].get("ours", {})
    for base in ("trl-defaults", "trl-best"):
        if f"speedup_vs_{base}" in ours:
            print(f"gmai vs {NAMES[base]}: {ours[f'speedup_vs_{base}']:.2f}x tokens/s, "
                  f"{ours[f'cpu_speedup_vs_{base}']:.2f}x tokens per CPU-second, peak memory ratio "
                  f"{ours[f'peak_rss_ratio_vs_{base}']:.2f}")


def main() -> None:
    args = parse_args()
    if args.child:
        return run_child(args)
    from gmai.model import create_model, save_checkpoint
    from gmai.train.data import corpus_texts
    from gmai.train.fixtures import write_synthetic_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = not args.data
        data_dirs = args.data or [str(write_synthetic_corpus(tmp / "synthetic", n_images=400, n_text=0))]
        _, samples = stage3_samples(data_dirs, args.max_samples)
        write_bench_data(samples, tmp / "bench")
        model, processor = create_model("tiny", corpus=corpus_texts(samples))
        save_checkpoint(model, processor, tmp / "model")
        args.model, args.bench_data, args.work = str(tmp / "model"), tmp / "bench", tmp
        tokens = count_tokens(args.model, tmp / "bench")
        rounds = run_rounds(args, len(samples), tokens)
        if args.profile:
            profile = Path(args.json).with_name("train_throughput_profile_gmai.txt")
            child("ours", args, 0, str(profile))
        if args.op_profile:
            write_op_profiles(args, len(samples), rounds)
    report = {"benchmark": "train_throughput", "synthetic_data": synthetic, "data": data_dirs,
              "source": "SYNTHETIC corpus" if synthetic else ", ".join(data_dirs), "samples": len(samples),
              "tokens": tokens, "threads": args.threads, "rounds_count": args.rounds, "rounds": rounds,
              "summary": summarise(rounds), "trl_best_batch": args.trl_batch, "machine": machine()}
    print_table(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
