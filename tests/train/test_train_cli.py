from typer.testing import CliRunner

from gmai.cli import app
from gmai.train.cli import parse_stages


def test_train_cli_reports_bad_input_clearly(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(tmp_path / "nope.yaml"), "--data", str(tmp_path), "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output and "does not exist" in result.output
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  1: {trainable: [projector]}\n")
    result = runner.invoke(app, ["train", str(recipe), "stages.1.lr=oops", "--data", str(tmp_path), "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2 and "expected float" in result.output
    result = runner.invoke(app, ["train", str(recipe), "--data", str(tmp_path / "missing"), "--out",
                                 str(tmp_path / "out")])
    assert result.exit_code == 2 and "missing" in result.output


def test_stage_list_parsing():
    assert parse_stages("1,2,3") == [1, 2, 3]
    assert parse_stages("") is None
