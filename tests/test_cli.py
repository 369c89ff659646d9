from typer.testing import CliRunner

from gmai.cli import app


def test_cli_lists_command_groups():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("data", "train", "eval", "rl", "serve", "demo"):
        assert name in result.output
