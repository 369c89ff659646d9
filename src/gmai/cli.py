"""The `gmai` command. Thin: each package owns its sub-commands in `<package>/cli.py`."""

from __future__ import annotations

import typer

from gmai.data.cli import app as data_app
from gmai.eval.cli import app as eval_app
from gmai.model.cli import app as model_app
from gmai.rl.cli import app as rl_app
from gmai.serve.cli import demo_ui_command, serve_command
from gmai.train.cli import train_command

app = typer.Typer(help="Build general medical vision-language models.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(data_app, name="data", help="Data engine: specialist datasets -> grounded image-text data.")
app.add_typer(eval_app, name="eval", help="Medical benchmarks with exact, versioned scoring.")
app.add_typer(model_app, name="model", help="Model folders: tiny real-format fixtures per family.")
app.add_typer(rl_app, name="rl", help="GMAI-VL-R1: reasoning questions, rejection sampling, GRPO.")
app.command("train", help="Three-stage progressive training from a recipe YAML.")(train_command)
app.command("serve", help="OpenAI-compatible API server.")(serve_command)
app.command("demo-ui", help="Gradio web demo.")(demo_ui_command)


@app.command("demo")
def demo_command(out: str = typer.Option("demo-out", help="Output folder for the whole pipeline."),
                 vqa_rad: str = typer.Option("", help="VQA-RAD folder (default: ../shared/data/vqa-rad if present)."),
                 ) -> None:
    """The main job: build the default corpus, train, RL, evaluate, and write a report."""
    from gmai.demo import run_demo

    run_demo(out=out, vqa_rad=vqa_rad or None)


if __name__ == "__main__":
    app()
