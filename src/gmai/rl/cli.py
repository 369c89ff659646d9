"""`gmai rl ...`: reasoning questions, rejection sampling, GRPO, the iterative loop, parquet export."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

app = typer.Typer(no_args_is_help=True, help="GMAI-VL-R1: reasoning questions, rejection sampling, GRPO.")


def _selectors(items: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"--hold-out takes FIELD=VALUE (e.g. modality=fundus), got {item!r}")
        key, value = item.split("=", 1)
        out.setdefault(key.strip(), []).extend(v.strip() for v in value.split(",") if v.strip())
    return out


def _fail(err: Exception) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[red]gmai rl: {err}")
    raise typer.Exit(2)


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


@app.command("questions")
def questions_command(
    input: str = typer.Argument(..., help="Data-engine output folder (MM-*.jsonl) or a benchmark folder (VQA-RAD)."),
    out: str = typer.Option(..., "--out", help="Output folder: questions.jsonl, questions-sft.jsonl, R1-SFT.jsonl, questions-heldout.jsonl."),
    split: str = typer.Option("train", help="Benchmark split to read (data-engine records carry their own)."),
    hold_out: Optional[List[str]] = typer.Option(None, "--hold-out",
                                                 help="FIELD=VALUE[,VALUE]: questions never used for training."),
    max_questions: int = typer.Option(0, help="Cap on training questions (0 = all)."),
    sft_questions: int = typer.Option(0, help="Give SFT its own N questions (questions-sft.jsonl, R1-SFT.jsonl) "
                                           "and GRPO the rest (questions.jsonl); 0 = both use the same."),
    n_options: int = typer.Option(4, help="Options per multiple-choice question."),
    kinds: str = typer.Option("choice,closed,open,box", help="Question kinds to build."),
    rl_kinds: str = typer.Option("", help="Kinds for GRPO's questions only (e.g. 'choice', as GMAI-Reasoning10K); "
                                          "SFT keeps every kind. Empty = the same as --kinds."),
    seed: int = typer.Option(0),
) -> None:
    """Verifiable questions (multiple choice, yes/no, short open, boxes): RL and SFT variants."""
    from gmai.rl.questions import build_questions

    try:
        summary = build_questions(input, out, split=split, seed=seed, max_questions=max_questions, n_options=n_options,
                                  kinds=_kinds(kinds), hold_out=_selectors(hold_out), sft_questions=sft_questions,
                                  rl_kinds=_kinds(rl_kinds) or None)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(json.dumps({k: summary[k] for k in ("images", "questions", "heldout", "by_type", "files")}, indent=2))


@app.command("synth")
def synth_command(
    questions: str = typer.Argument(..., help="questions.jsonl from `gmai rl questions`."),
    teacher: str = typer.Option(..., "--teacher", help="Checkpoint folder or http(s)://host/v1 endpoint."),
    out: str = typer.Option(..., "--out", help="Output folder: R1-SFT.jsonl, synth-report.json, unsolved.jsonl."),
    k: int = typer.Option(4, help="Chains sampled per question."),
    max_per_question: int = typer.Option(2, help="Chains kept per question."),
    temperature: float = typer.Option(0.9),
    max_new_tokens: int = typer.Option(256),
    dedup_threshold: float = typer.Option(0.8, help="3-gram Jaccard above which two chains are near-duplicates."),
    batch_size: int = typer.Option(8),
    template_fallback: bool = typer.Option(False, help="Add the (flagged) template chain for unsolved questions."),
    max_questions: int = typer.Option(0),
    model_name: str = typer.Option("", help="Model name at the endpoint (default: its first model)."),
    seed: int = typer.Option(0),
) -> None:
    """Rejection sampling: keep format-valid chains whose answer the eval rules count correct."""
    from gmai.rl.synth import SynthConfig, print_report, synthesise

    config = SynthConfig(k=k, temperature=temperature, max_new_tokens=max_new_tokens, max_per_question=max_per_question,
                         dedup_threshold=dedup_threshold, batch_size=batch_size, seed=seed,
                         template_fallback=template_fallback)
    extra = {"model_name": model_name} if model_name and teacher.startswith("http") else {}
    try:
        report = synthesise(questions, teacher, out, config, max_questions=max_questions, **extra)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    print_report(report, k)
    typer.echo(f"{report['sft_rows']} SFT rows ({report['template_rows']} template) -> {out}/R1-SFT.jsonl; "
               f"{len(report['unsolved'])} questions without an accepted chain -> {out}/unsolved.jsonl")


@app.command("train")
def train_command(
    recipe: str = typer.Argument(..., help="R1 recipe YAML, e.g. recipes/r1-tiny.yaml."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. grpo.max_steps=5."),
    out: str = typer.Option(..., "--out", help="Output: metrics.jsonl, grpo-metrics.png, final/."),
    model: str = typer.Option("", "--model", help="Checkpoint to train (default: the recipe's `model`)."),
    questions: str = typer.Option("", "--questions", help="RL questions.jsonl (default: build from questions.input)."),
) -> None:
    """GRPO with verifiable rewards on TRL's GRPOTrainer."""
    from pathlib import Path

    from gmai.rl.grpo import train_grpo
    from gmai.rl.pipeline import load_r1_recipe
    from gmai.rl.questions import RL_FILE

    try:
        r = load_r1_recipe(recipe, overrides or [])
        start = model or r.model
        if not start:
            raise ValueError("no model: pass --model or set `model` in the recipe")
        if not questions:
            r.questions.build(Path(out) / "questions")
            questions = str(Path(out) / "questions" / RL_FILE)
        summary = train_grpo(start, questions, out, r.grpo)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    first, last = summary["first"], summary["last"]
    typer.echo(f"{summary['steps']} steps in {summary['train_seconds']}s: reward {first.get('reward')} -> "
               f"{last.get('reward')}, zero-signal {first.get('zero_signal_fraction')} -> "
               f"{last.get('zero_signal_fraction')}; model -> {summary['final']}")


@app.command("iterate")
def iterate_command(
    recipe: str = typer.Argument(..., help="R1 recipe YAML."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. iterate.rounds=2."),
    out: str = typer.Option(..., "--out"),
    model: str = typer.Option("", "--model", help="Starting checkpoint / first teacher (default: recipe `model`)."),
    input: str = typer.Option("", "--input", help="Question source (default: recipe questions.input)."),
) -> None:
    """The paper's loop: synthesise -> SFT -> GRPO -> synthesise again with the improved model."""
    from rich.console import Console

    from gmai.rl.pipeline import iterate, load_r1_recipe

    try:
        r = load_r1_recipe(recipe, overrides or [])
        r.model = model or r.model
        r.questions.input = input or r.questions.input
        summary = iterate(r, out, console=Console(stderr=True))
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    for rnd in summary["rounds"]:
        typer.echo(f"round {rnd['round']}: pass@k {rnd['pass@k']:.2f}, {rnd['synth']['sft_rows']} SFT rows, "
                   f"GRPO reward {rnd['grpo_first'].get('reward')} -> {rnd['grpo_last'].get('reward')}")
    typer.echo(f"final model -> {summary['final']}")


@app.command("export")
def export_command(
    questions: str = typer.Argument(..., help="questions.jsonl from `gmai rl questions`."),
    out: str = typer.Option(..., "--out", help="Writes OUT/verl/<split>.parquet and OUT/easyr1/<split>.parquet."),
    split: str = typer.Option("train"),
) -> None:
    """Export RL questions in verl / EasyR1 parquet layout (images embedded)."""
    from gmai.rl.export import export_parquet

    try:
        paths = export_parquet(questions, out, split)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(json.dumps(paths, indent=2))
