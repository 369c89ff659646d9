"""Evaluation throughput: batched evaluation (the `gmai eval` path) vs a one-question-at-a-time loop.

Same model, same questions, same greedy decoding settings, measured in one run. The batched side is
``gmai.eval.runner.generate_predictions`` (image loading, prompt building, batched ``gmai.infer``
generation, cache writes); the baseline loads each question's image and calls ``generate`` on that one
question. Target: >= 3x questions/s at batch 16 on CPU.

    python benchmarks/eval_throughput.py [--n 64] [--batch-size 16] [--max-new-tokens 16] [--vqa-rad DIR]

Questions come from VQA-RAD test when the shared copy is present, else from synthetic images (said so
in the output). The model is the ``tiny`` preset with random weights (a trained tiny checkpoint can be
given with --checkpoint): throughput does not depend on what the weights learned, except through how
early replies stop, which is why the max_new_tokens cap applies to both sides equally.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VQA_RAD = ROOT.parent / "shared" / "data" / "vqa-rad"


def synthetic_items(n: int, tmp: Path):
    """Synthetic stand-ins (random-noise images, templated yes/no questions) when VQA-RAD is absent."""
    import numpy as np
    from PIL import Image

    from gmai.eval.benchmarks import BenchItem, ImageRef

    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        path = tmp / f"synthetic_{i}.png"
        Image.fromarray(rng.integers(0, 255, (96, 128), dtype=np.uint8)).save(path)
        items.append(BenchItem(f"syn-{i}", f"Is there a lesion in region {i}?", "yes", "closed",
                               images=[ImageRef(path=str(path), name=path.name)], benchmark="synthetic"))
    return items


def load_questions(n: int, vqa_rad: Path, tmp: Path):
    from gmai.eval.benchmarks import load_benchmark

    if (vqa_rad / "testset.json").is_file():
        return load_benchmark("vqa-rad", vqa_rad)[:n], f"VQA-RAD test (first {n})"
    return synthetic_items(n, tmp), f"synthetic ({n} noise images; VQA-RAD not found at {vqa_rad})"


def build_backend(checkpoint: str | None, corpus_questions: list[str]):
    from gmai.infer.local import LocalBackend

    if checkpoint:
        return LocalBackend.from_checkpoint(checkpoint, device="cpu"), checkpoint
    from gmai.model import create_model

    corpus = corpus_questions * 4 + ["yes", "no", "left lung", "right kidney", "CT", "MRI", "X-ray"] * 20
    model, processor = create_model("tiny", corpus=corpus, seed=0)
    return LocalBackend(model, processor, name="tiny-random"), "tiny preset, random weights"


MAX_SIDE = 0  # set from --max-side


def one_at_a_time(backend, items, config) -> tuple[float, list[str]]:
    from gmai.eval.runner import build_prompt
    from gmai.infer import ChatRequest

    replies = []
    start, cpu = time.perf_counter(), time.process_time()
    for item in items:
        request = ChatRequest(prompt=build_prompt(item), images=item.load_images(MAX_SIDE))
        replies.extend(backend.generate([request], config, batch_size=1))
    return (time.perf_counter() - start, time.process_time() - cpu), replies


def batched(backend, items, config, batch_size: int, tmp: Path, tag: str) -> tuple[float, list[str]]:
    from gmai.eval.runner import PredictionCache, generate_predictions

    cache = PredictionCache(tmp / f"cache_{tag}.jsonl", "throughput")
    start, cpu = time.perf_counter(), time.process_time()
    preds = generate_predictions(backend, items, config, cache, batch_size=batch_size, max_side=MAX_SIDE)
    return (time.perf_counter() - start, time.process_time() - cpu), [preds[it.qid]["prediction"] for it in items]


def interleaved(backend, items, config, batch_size: int, tmp: Path):
    """Both modes on the same chunks of 2 batches, in A-B / B-A order, so that a change in machine load
    during the run (other processes share these cores) hits both sides alike."""
    t_single = t_batch = (0.0, 0.0)
    single, batch = [], []
    chunk = 2 * batch_size
    for k, start in enumerate(range(0, len(items), chunk)):
        part = items[start:start + chunk]
        order = ("single", "batch") if k % 2 == 0 else ("batch", "single")
        for mode in order:
            if mode == "single":
                t, replies = one_at_a_time(backend, part, config)
                t_single, single = (t_single[0] + t[0], t_single[1] + t[1]), single + replies
            else:
                t, replies = batched(backend, part, config, batch_size, tmp, f"chunk{k}")
                t_batch, batch = (t_batch[0] + t[0], t_batch[1] + t[1]), batch + replies
    return t_single, single, t_batch, batch


def measure(backend, items, max_new_tokens: int, batch_size: int, tmp: Path) -> dict:
    from gmai.infer import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    one_at_a_time(backend, items[:2], config)  # warm-up (allocator, kernels)
    t_single, single, t_batch, batch = interleaved(backend, items, config, batch_size, tmp / f"t{max_new_tokens}")
    n = len(items)
    (wall_1, cpu_1), (wall_b, cpu_b) = t_single, t_batch
    return {"max_new_tokens": max_new_tokens,
            "one_at_a_time": {"seconds": round(wall_1, 3), "questions_per_s": round(n / wall_1, 3),
                              "cpu_seconds": round(cpu_1, 3)},
            "batched": {"seconds": round(wall_b, 3), "questions_per_s": round(n / wall_b, 3),
                        "cpu_seconds": round(cpu_b, 3)},
            "speedup": round(wall_1 / wall_b, 2), "cpu_time_ratio": round(cpu_1 / cpu_b, 2),
            "same_replies": sum(a == b for a, b in zip(single, batch))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", default="16,64",
                        help="comma-separated caps to measure; 64 is `gmai eval`'s default")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (default 1: stable timings on a shared machine; "
                             "0 = torch's default)")
    parser.add_argument("--vqa-rad", type=Path, default=DEFAULT_VQA_RAD)
    parser.add_argument("--max-side", type=int, default=0,
                        help="image downscale on load, both sides (gmai eval --max-side); 0 = full resolution")
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint instead of the random tiny model")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_throughput.json")
    args = parser.parse_args()

    import torch

    global MAX_SIDE
    MAX_SIDE = args.max_side
    if args.threads:
        torch.set_num_threads(args.threads)
    caps = [int(v) for v in str(args.max_new_tokens).split(",") if v.strip()]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        items, source = load_questions(args.n, args.vqa_rad, tmp)
        backend, model_desc = build_backend(args.checkpoint, [it.question for it in items])
        runs = []
        for cap in caps:
            (tmp / f"t{cap}").mkdir()
            runs.append(measure(backend, items, cap, args.batch_size, tmp))

    n = len(items)
    target = 3.0
    result = {"questions": n, "source": source, "model": model_desc, "batch_size": args.batch_size,
              "image_max_side": args.max_side,
              "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
              "order": "interleaved chunks of 2 batches, alternating which mode runs first",
              "target_speedup": target, "runs": runs}
    print(f"eval throughput on {n} questions ({source}); model: {model_desc}; batch {args.batch_size}; "
          f"image max side={args.max_side or 'full'}; torch threads={result['torch_threads']}; "
          f"load average {result['load_average_1min']}")
    print(f"{'max_new_tokens':>14}{'1-at-a-time q/s':>17}{'batched q/s':>13}{'speedup':>9}"
          f"{'CPU-time ratio':>16}{'same replies':>14}")
    for r in runs:
        print(f"{r['max_new_tokens']:>14}{r['one_at_a_time']['questions_per_s']:>17.2f}"
              f"{r['batched']['questions_per_s']:>13.2f}{r['speedup']:>8.2f}x{r['cpu_time_ratio']:>15.2f}x"
              f"{r['same_replies']:>10}/{n}")
    print("speedup = wall-clock questions/s ratio (the target); CPU-time ratio = process CPU seconds, "
          "less sensitive to other processes on shared cores")
    for r in runs:
        verdict = "met" if r["speedup"] >= target else "NOT met"
        print(f"target >= {target:.0f}x at max_new_tokens={r['max_new_tokens']}: {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
