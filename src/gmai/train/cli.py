"""`gmai train RECIPE --data DIR --out OUT [--stages 1,2,3] [key=value ...]`."""

from __future__ import annotations

from typing import List, Optional

import typer


def parse_stages(text: str) -> list[int] | None:
    if not text.strip():
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise typer.BadParameter(f"--stages takes comma-separated stage numbers like 1,2,3, got {text!r}") from None


def train_command(
    recipe: str = typer.Argument(..., help="Recipe YAML, e.g. recipes/tiny.yaml."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. stages.1.lr=1e-3."),
    data: List[str] = typer.Option(..., "--data", help="Data folder written by `gmai data build` (JSONL per "
                                                       "subset); repeat to read several together."),
    out: str = typer.Option(..., "--out", help="Output folder: stage0..3 checkpoints, metrics.jsonl, plots."),
    stages: str = typer.Option("", "--stages", help="Stages to run, e.g. 1,2,3 (default: all enabled in the recipe)."),
) -> None:
    """Three-stage progressive training (GMAI-VL) from a recipe; resumes from the last checkpoint if rerun."""
    from rich.console import Console

    from gmai.train.config import RecipeError, load_recipe
    from gmai.train.data import DataError
    from gmai.train.trainer import TrainingDiverged, train

    console = Console(stderr=True)
    try:
        cfg = load_recipe(recipe, overrides or [])
        summary = train(cfg, data, out, stages=parse_stages(stages), console=console)
    except (RecipeError, DataError, FileNotFoundError, TrainingDiverged, ValueError) as err:
        # no markup (messages hold [lists]) and no wrapping (paths must stay copyable)
        console.print(f"gmai train: {err}", style="red", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for k, info in summary.items():
        console.print(f"stage {k}: loss {info['first_loss']:.3f} -> {info['last_loss']:.3f} in {info['steps']} steps "
                      f"({info['elapsed_s']}s) -> {out}/stage{k}")
