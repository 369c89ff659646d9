"""Sub-commands of this package (placeholder until the package's commands land)."""

import typer

app = typer.Typer(no_args_is_help=True)
