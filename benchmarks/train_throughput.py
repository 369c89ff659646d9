"""Stage III training throughput: gmai's trainer (packing) vs TRL's ``SFTTrainer`` with its defaults.

Same model (the ``tiny`` preset, one saved checkpoint both start from), same samples (the Stage III
mixture after the quality filter), same hardware, one epoch each, measured in one run. Each side runs
in its own subprocess so peak memory (max RSS, whole process) is its own.

    python benchmarks/train_throughput.py [--data DIR ...] [--max-samples 480] [--threads 2]

Both wall time and CPU time (user + system, all threads) are reported: on a machine shared with other
jobs the wall time mostly measures the neighbours, while tokens per CPU-second is the work each side needs.
tokens/s = non-padding input tokens of the epoch / wall seconds from "model + data on disk" to
"trained" (data loading, tokenisation, image preprocessing and collation included on both sides;
checkpoint saving excluded on both sides). The TRL side uses ``SFTConfig`` defaults except what the
stack notes require on CPU (``use_cpu=True``, ``bf16=False``), ``num_train_epochs=1`` (same data
amount as ours) and no intermediate saving/reporting. A second TRL row turns its default gradient
checkpointing off, so the comparison is not only about that.

Without --data the samples come from a SYNTHETIC corpus (gmai.train.fixtures: drawn shapes, captions of
varied length, reports, Q&A) - said so in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def cpu_seconds() -> float:
    """user + system CPU time of this process, all threads: the compute a run costs, whatever else the
    machine is running (wall time on a shared machine mostly measures the neighbours)."""
    t = os.times()
    return t.user + t.system


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------------ the two sides (run in subprocesses)

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
    t0, c0 = time.perf_counter(), cpu_seconds()
    summary = train(config_from_dict(tree), args.bench_data, args.out, stages=[3])
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    info = summary[3]
    save_s = json.loads((Path(args.out) / "metrics.jsonl").read_text().splitlines()[-1]).get("save_s", 0.0)
    return {"wall_s": wall - save_s, "cpu_s": cpu, "tokens": info["tokens"], "samples": info["samples"], "steps": info["steps"],
            "first_loss": info["first_loss"], "last_loss": info["last_loss"]}


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.threads)
    rows = [json.loads(x) for x in (Path(args.bench_data) / "bench.jsonl").read_text().splitlines()]

    t0, c0 = time.perf_counter(), cpu_seconds()
    processor = AutoProcessor.from_pretrained(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model)

    def to_messages(row):
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

    data = Dataset.from_list([{"messages": to_messages(r),
                               "images": [Image.open(Path(args.bench_data) / r["image"]).convert("RGB")]}
                              for r in rows])
    config = SFTConfig(output_dir=args.out, use_cpu=True, bf16=False, num_train_epochs=1, save_strategy="no",
                       report_to=[], logging_steps=10, learning_rate=2e-5, dataloader_num_workers=0,
                       gradient_checkpointing=not args.no_gc, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=processor)
    result = trainer.train()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"wall_s": wall, "cpu_s": cpu, "steps": result.global_step, "samples": len(rows), "train_loss": result.training_loss,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


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


def child(side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--model", args.model, "--bench-data", str(args.bench_data),
           "--out", str(Path(args.work) / side), "--threads", str(args.threads),
           "--our-batch-rows", str(args.our_batch_rows), "--our-grad-accum", str(args.our_grad_accum),
           "--our-max-length", str(args.our_max_length)] + (["--no-gc"] if side == "trl-no-gc" else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{proc.stderr[-4000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", default=[], help="data folder(s) from `gmai data build`")
    p.add_argument("--max-samples", type=int, default=480)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--our-max-length", type=int, default=512, help="packed row length (ours)")
    p.add_argument("--our-batch-rows", type=int, default=2, help="packed rows per micro-batch (ours)")
    p.add_argument("--our-grad-accum", type=int, default=2, help="micro-batches per optimizer step (ours)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "train_throughput.json"))
    p.add_argument("--skip-no-gc", action="store_true", help="only TRL with its defaults")
    # child-process arguments
    p.add_argument("--child", default="")
    p.add_argument("--model", default="")
    p.add_argument("--bench-data", default="")
    p.add_argument("--out", default="")
    p.add_argument("--no-gc", action="store_true")
    args = p.parse_args()

    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        result = run_ours(args) if args.child == "ours" else run_trl(args)
        result["peak_rss_mb"] = peak_rss_mb()
        print("RESULT " + json.dumps(result))
        return

    from gmai.model import create_model, save_checkpoint
    from gmai.train.data import corpus_texts
    from gmai.train.fixtures import write_synthetic_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = not args.data
        data_dirs = args.data or [str(write_synthetic_corpus(tmp / "synthetic", n_images=400, n_text=0))]
        _, samples = stage3_samples(data_dirs, args.max_samples)
        bench = tmp / "bench"
        bench.mkdir()
        (bench / "images").mkdir()
        with open(bench / "bench.jsonl", "w") as fh:  # one file, images copied: both sides read the same bytes
            for i, s in enumerate(samples):
                dst = bench / "images" / f"{i:05d}{s.image.suffix}"
                dst.write_bytes(s.image.read_bytes())
                conv = [{"from": "human" if m["role"] == "user" else "gpt",
                         "value": ("<image>\n" if j == 0 else "") + m["content"]} for j, m in enumerate(s.messages)]
                fh.write(json.dumps({"id": f"bench-{i}", "image": f"images/{dst.name}", "conversations": conv}) + "\n")
        model, processor = create_model("tiny", corpus=corpus_texts(samples))
        save_checkpoint(model, processor, tmp / "model")
        args.model, args.bench_data, args.work = str(tmp / "model"), bench, tmp
        tokens = count_tokens(args.model, bench)
        lengths = sorted(len(s.all_text().split()) for s in samples)
        sides = ["ours", "trl"] + ([] if args.skip_no_gc else ["trl-no-gc"])
        results = {}
        for side in sides:
            print(f"running {side} ...", flush=True)
            results[side] = child(side, args)
            # ours drops an incomplete last global batch: count the tokens it really trained on
            results[side]["tokens_per_s"] = results[side].get("tokens", tokens) / results[side]["wall_s"]
            results[side]["tokens_per_cpu_s"] = results[side].get("tokens", tokens) / results[side]["cpu_s"]

    base = results["trl"]
    names = {"ours": f"gmai trainer (packing {args.our_max_length})", "trl": "TRL SFTTrainer (defaults)",
             "trl-no-gc": "TRL SFTTrainer (defaults, no grad ckpt)"}
    source = "SYNTHETIC corpus" if synthetic else ", ".join(data_dirs)
    print(f"\nStage III, tiny preset, {len(samples)} samples ({source}),"
          f" {tokens} tokens, words/sample min {lengths[0]} median {lengths[len(lengths) // 2]} max {lengths[-1]}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"{'side':42s} {'steps':>6s} {'wall s':>8s} {'tokens/s':>9s} {'vs TRL':>7s} {'CPU s':>7s} "
          f"{'tok/CPU-s':>10s} {'vs TRL':>7s} {'peak RSS MB':>12s}")
    for side, r in results.items():
        print(f"{names[side]:42s} {r['steps']:>6d} {r['wall_s']:>8.1f} {r['tokens_per_s']:>9.0f} "
              f"{r['tokens_per_s'] / base['tokens_per_s']:>6.2f}x {r['cpu_s']:>7.1f} {r['tokens_per_cpu_s']:>10.0f} "
              f"{r['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:>6.2f}x {r['peak_rss_mb']:>12.0f}")
    report = {"benchmark": "train_throughput", "synthetic_data": synthetic, "data": data_dirs,
              "samples": len(samples), "tokens": tokens, "threads": args.threads, "results": results,
              "speedup_vs_trl_defaults": results["ours"]["tokens_per_s"] / base["tokens_per_s"],
              "cpu_speedup_vs_trl_defaults": results["ours"]["tokens_per_cpu_s"] / base["tokens_per_cpu_s"],
              "peak_rss_ratio_vs_trl_defaults": results["ours"]["peak_rss_mb"] / base["peak_rss_mb"],
              "load_average_at_end": os.getloadavg()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"speed-up vs TRL defaults: {report['speedup_vs_trl_defaults']:.2f}x wall, "
          f"{report['cpu_speedup_vs_trl_defaults']:.2f}x per CPU-second; peak memory ratio "
          f"{report['peak_rss_ratio_vs_trl_defaults']:.2f}; written {args.json}")


if __name__ == "__main__":
    main()
