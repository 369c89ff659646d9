"""Evaluation throughput: batched evaluation (the `gmai eval` path) vs a one-question-at-a-time loop.

Same model, same questions, same greedy decoding settings, measured in one run. Images are decoded once,
before any timing (``Decoded``), so both sides time the same work from decoded images to replies. The batched
side is ``gmai.eval.runner.generate_predictions`` (prompt building, the backend's image preprocessing for the
next batch in a background thread, batched ``gmai.infer`` generation, cache writes); the baseline calls
``generate`` on one question at a time (its image preprocessing included). Target: >= 3x questions/s at batch 16 on CPU, at 16 new tokens (a VQA answer's usual length) as well
as at 64, with full-size VQA-RAD images (``--max-side 0``).

    python benchmarks/eval_throughput.py [--n 64] [--batch-size 16] [--max-new-tokens 16,64] [--rounds 3]

Rounds: each round runs both modes over all questions, in chunks of 2 batches alternating which mode goes first;
the result keeps every round and the medians (the speed-up is the ratio of the median wall times; both modes have
the same questions, settings and images, so it compares like with like). Replies are compared question by question
(``same_replies``). CPU seconds and load averages: ``benchmarks/measure.py`` (this process, all its threads).

Questions come from VQA-RAD test when the shared copy is present, else from synthetic images (said so
in the output). The model is the ``tiny`` preset with random weights (a trained tiny checkpoint can be
given with --checkpoint): throughput does not depend on what the weights learned, except through how
early replies stop, which is why the max_new_tokens cap applies to both sides equally.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import Window, machine  # noqa: E402

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


class Decoded:
    """A question whose images were decoded once, before any timing (``load_images`` hands the same decoded
    images back): both modes then time the same work, from decoded images to replies."""

    def __init__(self, item, max_side: int):
        self._item, self._images = item, item.load_images(max_side)

    def __getattr__(self, name: str):
        return getattr(self._item, name)

    def load_images(self, max_side: int = 0) -> list:
        return list(self._images)


class WithoutImagePrefetch:
    """The backend with ``generate`` only: ``generate_predictions`` then cannot pad and resize the next batch's
    images ahead (``--no-image-prefetch``, the ablation: the backend does it inside each batch's encoding)."""

    def __init__(self, backend):
        self.name, self.generate = backend.name, backend.generate


def build_backend(checkpoint: str | None, corpus_questions: list[str]):
    from gmai.infer.local import LocalBackend

    if checkpoint:
        return LocalBackend.from_checkpoint(checkpoint, device="cpu"), checkpoint
    from gmai.model import create_model

    corpus = corpus_questions * 4 + ["yes", "no", "left lung", "right kidney", "CT", "MRI", "X-ray"] * 20
    model, processor = create_model("tiny", corpus=corpus, seed=0)
    return LocalBackend(model, processor, name="tiny-random"), "tiny preset, random weights"


def one_at_a_time(backend, items, config) -> tuple[float, list[str]]:
    from gmai.eval.runner import build_prompt
    from gmai.infer import ChatRequest

    replies = []
    with Window() as window:
        for item in items:
            request = ChatRequest(prompt=build_prompt(item), images=item.load_images())
            replies.extend(backend.generate([request], config, batch_size=1))
    return (window.wall_s, window.cpu_s), replies


def batched(backend, items, config, batch_size: int, tmp: Path, tag: str) -> tuple[float, list[str]]:
    from gmai.eval.runner import PredictionCache, generate_predictions

    cache = PredictionCache(tmp / f"cache_{tag}.jsonl", "throughput")
    with Window() as window:
        preds = generate_predictions(backend, items, config, cache, batch_size=batch_size)
    return (window.wall_s, window.cpu_s), [preds[it.qid]["prediction"] for it in items]


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


def measure(backend, items, max_new_tokens: int, batch_size: int, tmp: Path, rounds: int) -> dict:
    from gmai.infer import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    one_at_a_time(backend, items[:2], config)  # warm-up (allocator, kernels)
    every, same = [], []
    for r in range(rounds):
        (tmp / f"t{max_new_tokens}-r{r}").mkdir(parents=True)
        t_single, single, t_batch, batch = interleaved(backend, items, config, batch_size, tmp / f"t{max_new_tokens}-r{r}")
        every.append({"one_at_a_time": {"seconds": round(t_single[0], 3), "cpu_seconds": round(t_single[1], 3)},
                      "batched": {"seconds": round(t_batch[0], 3), "cpu_seconds": round(t_batch[1], 3)},
                      "load_avg": machine()["load_avg"]})
        same.append(sum(a == b for a, b in zip(single, batch)))
    n = len(items)
    med = lambda mode, key: statistics.median(x[mode][key] for x in every)  # noqa: E731
    wall_1, wall_b = med("one_at_a_time", "seconds"), med("batched", "seconds")
    cpu_1, cpu_b = med("one_at_a_time", "cpu_seconds"), med("batched", "cpu_seconds")
    return {"max_new_tokens": max_new_tokens, "rounds": every,
            "one_at_a_time": {"median_seconds": wall_1, "questions_per_s": round(n / wall_1, 3),
                              "median_cpu_seconds": cpu_1},
            "batched": {"median_seconds": wall_b, "questions_per_s": round(n / wall_b, 3), "median_cpu_seconds": cpu_b},
            "speedup": round(wall_1 / wall_b, 2), "cpu_time_ratio": round(cpu_1 / cpu_b, 2),
            "speedup_per_round": [round(x["one_at_a_time"]["seconds"] / x["batched"]["seconds"], 2) for x in every],
            "same_replies": min(same)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", default="16,64",
                        help="comma-separated caps to measure; 64 is `gmai eval`'s default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (default 1: stable timings on a shared machine; "
                             "0 = torch's default)")
    parser.add_argument("--vqa-rad", type=Path, default=DEFAULT_VQA_RAD)
    parser.add_argument("--max-side", type=int, default=0,
                        help="image downscale on load, both sides (gmai eval --max-side); 0 = full resolution")
    parser.add_argument("--no-image-prefetch", action="store_true",
                        help="ablation: the batched side pads/resizes images inside each batch, not ahead")
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint instead of the random tiny model")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_throughput.json")
    return parser.parse_args()


TARGET = 3.0


def print_table(result: dict) -> None:
    n = result["questions"]
    print(f"eval throughput on {n} questions ({result['source']}); model: {result['model']}; batch "
          f"{result['batch_size']}; image max side={result['image_max_side'] or 'full'}; torch threads="
          f"{result['torch_threads']}; {result['rounds']} rounds; {result['machine']['note']}")
    print(f"{'max_new_tokens':>14}{'1-at-a-time q/s':>17}{'batched q/s':>13}{'speedup':>9}"
          f"{'CPU-time ratio':>16}{'same replies':>14}   (medians; speed-up per round)")
    for r in result["runs"]:
        print(f"{r['max_new_tokens']:>14}{r['one_at_a_time']['questions_per_s']:>17.2f}"
              f"{r['batched']['questions_per_s']:>13.2f}{r['speedup']:>8.2f}x{r['cpu_time_ratio']:>15.2f}x"
              f"{r['same_replies']:>10}/{n}   {', '.join(f'{x:.2f}x' for x in r['speedup_per_round'])}")
    for r in result["runs"]:
        verdict = "met" if r["speedup"] >= TARGET else "NOT met"
        print(f"target >= {TARGET:.0f}x at max_new_tokens={r['max_new_tokens']}: {verdict}")


def main() -> None:
    args = parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    caps = [int(v) for v in str(args.max_new_tokens).split(",") if v.strip()]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        items, source = load_questions(args.n, args.vqa_rad, tmp)
        items = [Decoded(it, args.max_side) for it in items]  # decoding is outside the timed window
        backend, model_desc = build_backend(args.checkpoint, [it.question for it in items])
        if args.no_image_prefetch:
            backend = WithoutImagePrefetch(backend)
        runs = [measure(backend, items, cap, args.batch_size, tmp, args.rounds) for cap in caps]
    result = {"questions": len(items), "source": source, "model": model_desc, "batch_size": args.batch_size,
              "image_max_side": args.max_side, "image_prefetch": not args.no_image_prefetch,
              "torch_threads": torch.get_num_threads(), "rounds": args.rounds,
              "order": "per round: interleaved chunks of 2 batches, alternating which mode runs first",
              "target_speedup": TARGET, "runs": runs, "machine": machine()}
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
