"""GMAI-VL-R1's GRPO on its real base family, Qwen2.5-VL: 2 steps through `gmai rl train` from a tiny
random-weight folder in the released format (gmai.model.fixtures.write_qwen25_vl), then the result reloads
with plain transformers. Random weights: rewards are mostly 0; this tests plumbing, not learning."""

import json

import pytest
from typer.testing import CliRunner

from gmai.cli import app
from gmai.model.fixtures import released_template, write_qwen25_vl
from gmai.rl.questions import RL_FILE, build_questions
from gmai.train.fixtures import write_synthetic_corpus


@pytest.mark.slow
def test_grpo_two_steps_on_a_qwen25_vl_base(tmp_path):
    base = write_qwen25_vl(tmp_path / "base")
    corpus = write_synthetic_corpus(tmp_path / "corpus", n_images=8, seed=2, image_size=64)
    build_questions(corpus, tmp_path / "q", kinds=("choice",), seed=0)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "rl", "train", "recipes/r1-tiny.yaml", "grpo.max_steps=2", "grpo.max_completion_length=8",
        "grpo.beta=0.04", "grpo.answer_types=[choice]", "--out", str(out), "--model", str(base),
        "--questions", str(tmp_path / "q" / RL_FILE)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["reward"] is not None for r in rows)
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(out / "final")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert (out / "final" / "chat_template.jinja").read_text() == released_template("qwen2_5_vl")
