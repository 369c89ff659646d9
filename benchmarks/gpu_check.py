"""The prepared GPU check (run by benchmarks/gpu_check.sh): Stage III of the gmai-vl-7b recipe on
real-format part folders scaled to ~1B parameters (random weights: a speed/memory check, never quality),
bf16, SDPA (or flash attention), FSDP2 on one GPU (the trainer's own, gmai.train.sharding, as on CPU).
Prints tokens/s, peak memory and MFU and writes benchmarks/results/gpu_check.json.

    python benchmarks/gpu_check.py prepare WORK [--tiny]      # fixtures + synthetic corpus
    accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes 1 \
        benchmarks/gpu_check.py run WORK [--steps N] [--attn sdpa|flash_attention_2]

MFU = 6 x trainable-and-frozen parameters x tokens/s / peak bf16 FLOP/s (dense; GMAI_PEAK_TFLOPS, default
989 for H100/H200 SXM). 6N counts forward + backward of every weight and ignores attention's own FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# ~1B: a Qwen2.5-Instruct-format LM of ~0.7B (hidden 2048 x 16 layers) + CLIP ViT-L/14-336 (~0.3B vision)
SCALE = {"lm": dict(hidden_size=2048, num_layers=16, num_heads=16, num_kv_heads=4, intermediate_size=8192),
         "clip": dict(image_size=336, patch_size=14, hidden_size=1024, num_layers=24, num_heads=16)}
TINY = {"lm": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
        "clip": dict(image_size=56, patch_size=14, hidden_size=32, num_layers=2, num_heads=2)}


def prepare(work: Path, tiny: bool) -> None:
    from gmai.model.fixtures import write_clip, write_qwen25_instruct_lm
    from gmai.train.fixtures import write_synthetic_corpus

    sizes = TINY if tiny else SCALE
    write_qwen25_instruct_lm(work / "lm", **sizes["lm"])
    write_clip(work / "clip", **sizes["clip"])
    write_synthetic_corpus(work / "data", n_images=64 if tiny else 512, n_text=16, image_size=256)
    print(f"prepared {work}")


def run(work: Path, steps: int, attn: str, out: Path) -> dict:
    import torch

    from gmai.train.config import load_recipe
    from gmai.train.trainer import train

    cuda = torch.cuda.is_available()
    overrides = [f"model.llm_path={work / 'lm'}", f"model.vision_path={work / 'clip'}",
                 f"model.attn_implementation={attn}", f"run.mixed_precision={'bf16' if cuda else 'no'}",
                 "run.tensorboard=false", "run.plot=false", "stages.1.enabled=false", "stages.2.enabled=false",
                 f"stages.3.max_steps={steps}", "stages.3.per_device_batch_size=4", "stages.3.grad_accum=1",
                 "stages.3.max_length=2048", "stages.3.save_every=0", "stages.3.log_every=1"]
    cfg = load_recipe(str(ROOT / "recipes" / "gmai-vl-7b.yaml"), overrides)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    summary = train(cfg, work / "data", out)
    wall = time.perf_counter() - started
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [m for m in lines if m["event"] == "step"][1:]  # the first step includes warm-up/compilation
    tok_s = sum(m["tokens_per_s"] for m in steps_logged) / max(1, len(steps_logged))
    params = summary[3]["params"]["all"]["total"]
    peak_flops = float(os.environ.get("GMAI_PEAK_TFLOPS", "989")) * 1e12
    result = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "attn": attn, "params": params,
              "steps": summary[3]["steps"], "tokens_per_s": round(tok_s, 1),
              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
              "mfu": round(6 * params * tok_s / peak_flops, 4) if cuda else None, "wall_s": round(wall, 1),
              "distributed": distributed(lines)}
    return result


def distributed(lines: list[dict]) -> str:
    """How the run was parallelised, from its log: e.g. MULTI_GPU+fsdp2 (the trainer's FSDP2, gmai.train.sharding)."""
    start = next(m for m in lines if m["event"] == "run_start")
    return "+".join(str(x) for x in (start.get("distributed"), start.get("sharding")) if x)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["prepare", "run"])
    parser.add_argument("work", type=Path)
    parser.add_argument("--tiny", action="store_true", help="toy sizes (a CPU dry run of the script itself)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--attn", default="sdpa")
    args = parser.parse_args()
    if args.what == "prepare":
        return prepare(args.work, args.tiny)
    result = run(args.work, args.steps, args.attn, args.work / f"run-{int(time.time())}")
    if int(os.environ.get("RANK", "0")) == 0:
        print("| device | attn | params | tokens/s | peak GiB | MFU | distributed |\n|---|---|---|---|---|---|---|")
        print(f"| {result['device']} | {result['attn']} | {result['params']:,} | {result['tokens_per_s']} | "
              f"{result['peak_memory_gib']} | {result['mfu']} | {result['distributed']} |")
        if result["device"] == "cpu":
            print("CPU dry run of the script: no result written")
            return
        dest = ROOT / "benchmarks" / "results" / "gpu_check.json"
        dest.write_text(json.dumps(result, indent=1))
        print(f"wrote {dest}")


if __name__ == "__main__":
    main()
