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


def test_train_cli_model_folder_errors_are_one_line(tmp_path):
    """What a user sees for a hub name, a missing LM folder setting and an unsupported base family."""
    import json

    from gmai.train.fixtures import write_synthetic_corpus

    data = write_synthetic_corpus(tmp_path / "data", n_images=2, n_text=1, image_size=32)
    runner = CliRunner()

    def run(*overrides, stage="1"):
        result = runner.invoke(app, ["train", "recipes/gmai-vl-7b.yaml", "run.mixed_precision=no", *overrides,
                                     "--data", str(data), "--out", str(tmp_path / "out"), "--stages", stage])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("gmai train:")]
        assert len(lines) == 1 and "Traceback" not in result.output, result.output
        return lines[0]

    assert "local paths only" in run("model.llm_path=Qwen/Qwen2.5-7B-Instruct", f"model.vision_path={data}")
    assert "model.llm_path=DIR and model.vision_path=DIR" in run()
    base = tmp_path / "mllama"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "mllama", "architectures":
                                                  ["MllamaForConditionalGeneration"]}))
    (base / "model.safetensors").write_bytes(b"")
    line = run(f"model.base={base}", stage="3")
    assert "'Llama 3.2 Vision'" in line and "not supported" in line and str(base) in line
