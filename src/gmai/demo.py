"""The main job (`make demo`): the whole pipeline on the embedded default data and the tiny model.

1. write the default corpus: synthetic phantom datasets in standard layouts + real images that pip
   packages ship (`gmai data synth`);
2. build grounded image-text data from it, leakage-checked against VQA-RAD's images (`gmai data build`);
   when VQA-RAD is present, its training split is converted too (the benchmark's own train split);
3. train the tiny preset: text-only LM warm-up (not in the paper), Stages I, II, III, and Stage III
   from Stage I for the paper's ablation (`gmai train`);
4. evaluate the ablation (I, I+II, I+III, I+II+III) on the corpus's held-out split and VQA-RAD test,
   with the majority-answer and question-only baselines (`gmai eval`);
5. GMAI-VL-R1: reasoning questions, rejection sampling with the Stage III model as teacher, SFT + GRPO,
   evaluation in- and out-of-distribution (`gmai rl`);
6. write `OUT/report.md` and `OUT/report.html`.

Every step writes into its own folder and is skipped when its output is complete, so a rerun resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

DEFAULT_VQA_RAD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vqa-rad"  # ../shared beside the repo
ABLATION = (("I", "train", 1), ("I+II", "train", 2), ("I+III", "train-I+III", 3), ("I+II+III", "train", 3))


def _find_vqa_rad(given: str | None) -> Path | None:
    """An explicit path must hold the VQA-RAD JSON layout; without one, use ../shared/data/vqa-rad if present."""
    if given:
        if not (Path(given) / "testset.json").is_file():
            raise FileNotFoundError(f"--vqa-rad {given}: no testset.json there (expected the VQA-RAD JSON layout)")
        return Path(given).resolve()
    return DEFAULT_VQA_RAD.resolve() if (DEFAULT_VQA_RAD / "testset.json").is_file() else None


class Step:
    """Times a pipeline step and prints its outcome."""

    def __init__(self, console: Console, timings: dict[str, float], name: str):
        self.console, self.timings, self.name = console, timings, name

    def __enter__(self):
        self.start = time.perf_counter()
        self.console.rule(f"[bold]{self.name}")
        return self

    def __exit__(self, *exc):
        self.timings[self.name] = round(time.perf_counter() - self.start, 1)
        if exc[0] is None:
            self.console.print(f"[green]{self.name}: done in {self.timings[self.name]}s")


def write_corpus_sources(out: Path) -> list[str]:
    from gmai.data.synth import write_corpus

    sources = out / "sources"
    if not (sources / "sources.txt").is_file():
        write_corpus(sources, seed=0)
    return (sources / "sources.txt").read_text().split()


def build_data(specs: list[str], out: Path, exclude: list[str], workers: int = 2) -> dict[str, Any]:
    from gmai.data.build import BuildConfig, SourceSpec, run_build

    if not (out / "stats.json").is_file():
        config = BuildConfig(sources=[SourceSpec.parse(s) for s in specs], out=out, workers=workers,
                             exclude_benchmarks=exclude)
        run_build(config, progress=True)
    return json.loads((out / "stats.json").read_text())


def train_stages(data_dirs: list[Path], out: Path, console: Console, overrides: Sequence[str] = ()) -> dict[str, Any]:
    from gmai.train.config import load_recipe
    from gmai.train.trainer import train

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"
    cfg = load_recipe(recipe, list(overrides))
    summary = train(cfg, data_dirs, out / "train", console=console)
    # The paper's ablation needs Stage III started from Stage I (skipping II).
    ablation_cfg = load_recipe(recipe, [*overrides, f"model.init_from={out / 'train' / 'stage1'}"])
    summary_13 = train(ablation_cfg, data_dirs, out / "train-I+III", stages=[3], console=console)
    return {"main": summary, "I+III": summary_13}


def evaluate_ablation(out: Path, data_dir: Path, vqa_rad: Path | None, console: Console,
                      limit: int | None = None) -> dict[str, Any]:
    from gmai.eval.runner import BenchSpec, run_eval

    benches = [BenchSpec("gmai", str(data_dir))]
    if vqa_rad is not None:
        benches.append(BenchSpec("vqa-rad", str(vqa_rad)))
    options, config = demo_eval_settings(limit)
    reports = {}
    for name, run, stage in ABLATION:
        checkpoint = out / run / f"stage{stage}"
        reports[name] = run_eval(str(checkpoint), benches, out / "eval" / name, options, config=config,
                                 console=console)
    return reports


def demo_eval_settings(limit: int | None = None):
    """How the demo evaluates (also ``benchmarks/accuracy_vs_tokens.py``): images at the size the data build
    wrote for training; 24 new tokens, enough for short answers; the short-answer instruction (LLaVA-1.5's, as
    lmms-eval sends it for VQA-RAD), which Stage III learns with bare answers (recipes/tiny.yaml:
    short_answer_share), so exact-match rules can score the replies."""
    from gmai.eval.runner import EvalOptions
    from gmai.infer import GenerationConfig

    return (EvalOptions(batch_size=32, max_side=512, limit=limit, prompt_style="short"),
            GenerationConfig(max_new_tokens=24))


def run_demo(out: str = "demo-out", vqa_rad: str | None = None, *, recipe_overrides: Sequence[str] = (),
             eval_limit: int | None = None, r1_options: dict[str, Any] | None = None) -> Path:
    """The whole pipeline into ``out``. The keyword options shrink it (tests): ``recipe_overrides`` for
    recipes/tiny.yaml (``stages.3.max_steps=2``), ``eval_limit`` questions per benchmark, ``r1_options`` for
    :func:`gmai.rl.demo.run_r1_demo`."""
    console = Console()
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    vqa = _find_vqa_rad(vqa_rad)
    timings: dict[str, float] = {}
    results: dict[str, Any] = {"vqa_rad": str(vqa) if vqa else None}
    with Step(console, timings, "1. default corpus (synthetic phantoms + pip-shipped real images)"):
        specs = write_corpus_sources(out_dir)
    with Step(console, timings, "2. data engine"):
        exclude = [str(vqa / "images")] if vqa else []
        results["data"] = build_data(specs, out_dir / "data", exclude)
        data_dirs = [out_dir / "data"]
        if vqa:
            results["data_vqa_rad"] = build_data([f"vqa-rad:{vqa}?split=train"], out_dir / "data-vqa-rad", [])
            data_dirs.append(out_dir / "data-vqa-rad")
    with Step(console, timings, "3. three-stage training (tiny)"):
        results["train"] = train_stages(data_dirs, out_dir, console, recipe_overrides)
    with Step(console, timings, "4. evaluation: stage ablation"):
        results["eval"] = evaluate_ablation(out_dir, out_dir / "data", vqa, console, eval_limit)
    with Step(console, timings, "5. GMAI-VL-R1: synthesis, SFT, GRPO"):
        from gmai.rl.demo import run_r1_demo

        results["r1"] = run_r1_demo(out_dir / "train" / "stage3", out_dir / "data", out_dir / "r1",
                                    **(r1_options or {}))
    with Step(console, timings, "6. report"):
        from gmai.report import write_demo_report

        results["timings"] = timings
        report = write_demo_report(results, out_dir)
    console.print(f"[bold green]report: {report} (and {report.with_suffix('.html')})")
    return report
