"""``gmai eval``: run a model on benchmarks, score prediction files, compare runs.

``gmai eval MODEL --bench vqa-rad=PATH ...`` and ``gmai eval score PREDICTIONS ...`` share one group: the
group falls back to the ``run`` command when its first argument is not a sub-command name.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup


class DefaultRunGroup(TyperGroup):
    """A click group that treats an unknown first argument as ``run``'s MODEL."""

    default_command = "run"

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default_command, *args]
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=DefaultRunGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Medical benchmarks with exact, versioned scoring. `gmai eval MODEL --bench NAME=PATH` runs.")

RULES_HELP = ("Scoring rules (repeat); default: all of gmai@1, gmai-recall@1, lmms-eval-exact@1, multimedeval@1, "
              "medevalkit@1.")


def _options(rules, batch_size, limit, prompt_style, baselines, out=None, judge_url=None, judge_model=None,
             judge_api_key=None, max_side=0):
    from gmai.eval.runner import DEFAULT_RULES, EvalOptions

    judge = None
    if judge_url or judge_model:
        if not (judge_url and judge_model):
            raise typer.BadParameter("give both --judge-url and --judge-model", param_hint="--judge-url")
        from gmai.eval.judge import ChoiceJudge

        judge = ChoiceJudge(judge_url, judge_model, api_key=judge_api_key, cache_path=Path(out) / "judge_cache.jsonl")
    return EvalOptions(rules=tuple(rules) if rules else DEFAULT_RULES, batch_size=batch_size, limit=limit,
                       prompt_style=prompt_style, baselines=baselines, judge=judge, max_side=max_side)


JUDGE_URL = typer.Option(None, "--judge-url", help="OpenAI-compatible base URL of an LLM judge for multiple "
                         "choice replies the rules cannot read (adds rule gmai+judge@1; raw replies cached).")
JUDGE_MODEL = typer.Option(None, "--judge-model", help="Judge model name.")
JUDGE_KEY = typer.Option(None, "--judge-api-key", envvar="GMAI_JUDGE_API_KEY")


def _benches(bench: list[str]):
    from gmai.eval.runner import BenchSpec

    if not bench:
        raise typer.BadParameter("give at least one --bench NAME=PATH", param_hint="--bench")
    try:
        return [BenchSpec.parse(b) for b in bench]
    except (ValueError, KeyError) as err:
        raise typer.BadParameter(str(err), param_hint="--bench") from err


MAX_FAILURE_LINES = 20


def _summary(report) -> None:
    from rich.console import Console

    from gmai.eval.report import rich_table, rule_rows

    console = Console()
    for label, bench in report["benchmarks"].items():
        console.print(rich_table(["rule", "overall", "closed", "open", "choice", "n"], rule_rows(bench),
                                 title=f"{label}: {bench['n_items']} questions, {bench['n_failed']} failed"))
        _print_failures(label, bench.get("failures", []))


def _print_failures(label: str, failures: list[dict]) -> None:
    """One line per failed item (the first MAX_FAILURE_LINES; report.json lists them all)."""
    for f in failures[:MAX_FAILURE_LINES]:
        typer.echo(f"{label}: {f['qid']}: {f.get('stage', 'generation')} failure: {f['error']}", err=True)
    if len(failures) > MAX_FAILURE_LINES:
        typer.echo(f"{label}: ... and {len(failures) - MAX_FAILURE_LINES} more failures (all in report.json)",
                   err=True)


def _fail(err: BaseException) -> None:
    """Any error at the command line boundary: one line naming it, never a traceback."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    kind = "" if isinstance(err, (FileNotFoundError, ValueError, KeyError)) else f"{type(err).__name__}: "
    typer.secho(f"error: {kind}{text or type(err).__name__}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command("run")
def run_command(
    model: str = typer.Argument(..., help="Checkpoint folder (gmai or any HF image-text-to-text) "
                                          "or http(s)://host/v1."),
    bench: List[str] = typer.Option([], "--bench", help="NAME=PATH or NAME:SPLIT=PATH (repeat)."),
    out: Path = typer.Option(Path("eval-out"), "--out", help="Output folder (also holds the resume cache)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="First N questions per benchmark."),
    rules: List[str] = typer.Option([], "--rules", help=RULES_HELP),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy (deterministic)."),
    prompt_style: str = typer.Option("plain", "--prompt-style", help="plain | short (LLaVA-1.5 instructions)."),
    max_side: int = typer.Option(0, "--max-side", min=0, help="Downscale images whose longer side exceeds this, "
                                 "as `gmai data build --max-side` does (512 there by default); 0: never."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Majority and question-only baselines."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="GMAI_API_KEY"),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="Model name for an HTTP endpoint."),
    judge_url: Optional[str] = JUDGE_URL, judge_model: Optional[str] = JUDGE_MODEL,
    judge_api_key: Optional[str] = JUDGE_KEY,
) -> None:
    """Evaluate MODEL on benchmarks: report.json, predictions.jsonl, report.md, CSVs under --out."""
    from rich.console import Console

    from gmai.eval.runner import run_eval
    from gmai.infer import GenerationConfig

    specs = _benches(bench)
    try:
        options = _options(rules, batch_size, limit, prompt_style, baselines, out, judge_url, judge_model,
                           judge_api_key, max_side)
        report = run_eval(model, specs, out, options,
                          config=GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature),
                          api_key=api_key, model_name=model_name, console=Console(stderr=True))
    except Exception as err:  # noqa: BLE001 - the CLI boundary: one line, never a traceback
        _fail(err)
    _summary(report)
    typer.echo(f"wrote {out}/report.json, report.md, predictions.jsonl, scores.csv, breakdowns.csv")


@app.command("score")
def score_command(
    predictions: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL with qid and prediction."),
    bench: List[str] = typer.Option([], "--bench", help="NAME=PATH or NAME:SPLIT=PATH (repeat)."),
    out: Path = typer.Option(Path("eval-out"), "--out"),
    rules: List[str] = typer.Option([], "--rules", help=RULES_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines"),
    judge_url: Optional[str] = JUDGE_URL, judge_model: Optional[str] = JUDGE_MODEL,
    judge_api_key: Optional[str] = JUDGE_KEY,
) -> None:
    """Score an existing prediction file (no model): same reports as a run."""
    from gmai.eval.runner import score_file

    specs = _benches(bench)
    try:
        options = _options(rules, 16, limit, "plain", baselines, out, judge_url, judge_model, judge_api_key)
        report = score_file(predictions, specs, out, options)
    except Exception as err:  # noqa: BLE001 - the CLI boundary: one line, never a traceback
        _fail(err)
    _summary(report)
    typer.echo(f"wrote {out}/report.json, report.md, predictions.jsonl, scores.csv, breakdowns.csv")


@app.command("compare")
def compare_command(
    runs: List[Path] = typer.Argument(..., help="Run folders (or report.json files), in table order."),
    names: Optional[str] = typer.Option(None, "--names",
                                        help="Comma-separated row labels, e.g. I,I+II,I+III,I+II+III."),
    rule: str = typer.Option("gmai@1", "--rule"),
    by_type: bool = typer.Option(False, "--by-type", help="Also closed/open/choice columns."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the table as Markdown here."),
) -> None:
    """Side-by-side table of several runs (e.g. the stage ablation)."""
    from rich.console import Console

    from gmai.eval.report import comparison_table, load_run, markdown_table, rich_table

    try:
        loaded = [load_run(r) for r in runs]
        headers, rows = comparison_table(loaded, names.split(",") if names else [str(r) for r in runs],
                                         rule=rule, by_type=by_type)
    except Exception as err:  # noqa: BLE001 - the CLI boundary
        _fail(err)
    Console().print(rich_table(headers, rows, title=f"accuracy (%), rule {rule}"))
    if markdown:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(f"Accuracy (%), scoring rule `{rule}`.\n\n{markdown_table(headers, rows)}\n",
                            encoding="utf-8")
        typer.echo(f"wrote {markdown}")


@app.command("rules")
def rules_command() -> None:
    """List the scoring rules (name@version and what each does)."""
    from gmai.eval.scoring import RULES

    for name, rule in RULES.items():
        typer.echo(f"{name}\n    {rule.description}")


@app.command("benchmarks")
def benchmarks_command() -> None:
    """List the benchmark loaders and what each expects on disk."""
    from gmai.eval.benchmarks import REGISTRY

    for name, spec in sorted(REGISTRY.items()):
        typer.echo(f"{name} (splits: {', '.join(spec.splits)})\n    {spec.description}\n    {spec.fetch}")
