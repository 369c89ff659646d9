"""GRPO pieces: shared vision features / prefill are exact, metrics logging, recipes, export, and a
slow 2-step GRPO run through the CLI."""

import copy
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gmai.cli import app
from gmai.model import create_model, save_checkpoint
from gmai.rl import grpo as G
from gmai.rl.pipeline import load_r1_recipe
from gmai.rl.questions import RL_FILE, SFT_FILE, build_questions
from gmai.train.fixtures import write_synthetic_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("r1")
    corpus = write_synthetic_corpus(base / "corpus", n_images=12, seed=2)
    build_questions(corpus, base / "q", kinds=("choice",), seed=0)
    texts = [json.loads(line)["conversations"][1]["value"] for line in (base / "q" / SFT_FILE).read_text().splitlines()]
    model, processor = create_model("tiny", corpus=texts * 3 + ["What is this? <think> </think> <answer> </answer>"],
                                    seed=0)
    ckpt = save_checkpoint(model, processor, base / "tiny")
    return {"base": base, "corpus": corpus, "ckpt": ckpt, "model": model.eval(), "processor": processor}


def _batch(setup, repeat=2):
    processor = setup["processor"]
    images = [Image.open(p).convert("RGB") for p in sorted((setup["corpus"] / "images").glob("*.png"))[:2]]
    texts = [processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}],
                                           add_generation_prompt=True, tokenize=False)
             for t in ("Which modality?", "Where is the bright lesion in this image, exactly?")]
    processor.tokenizer.padding_side = "left"
    return processor(text=[texts[0]] * repeat + [texts[1]] * repeat, images=[images[0]] * repeat + [images[1]] * repeat,
                     return_tensors="pt", padding=True)


def test_unique_row_index_matches_by_content_in_any_order():
    a, b, c = torch.randn(3, 4, 4), torch.randn(3, 4, 4), torch.randn(3, 4, 4)
    rows = torch.stack([a, b, a, c, b, a])
    assert G.unique_row_index(rows) == [0, 1, 0, 3, 1, 0]


def test_shared_image_features_give_the_same_loss_and_gradients(setup):
    enc = _batch(setup)
    labels = enc["input_ids"].clone()

    def loss_and_grad(model):
        model.zero_grad()
        loss = model(**enc, labels=labels).loss
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.model.vision_tower.parameters() if p.grad is not None])
        return loss.detach(), grads

    fresh = copy.deepcopy(setup["model"])
    plain = loss_and_grad(setup["model"])
    assert G.share_image_features(fresh)
    shared = loss_and_grad(fresh)
    assert torch.allclose(plain[0], shared[0], atol=1e-5)
    assert torch.allclose(plain[1], shared[1], atol=1e-5)
    inner = G._llava_inner(fresh)
    assert (inner._gmai_images_requested, inner._gmai_images_encoded) == (4, 2)


def test_shared_prefill_generates_what_plain_generate_does(setup):
    enc = _batch(setup)
    model = copy.deepcopy(setup["model"]).eval()
    kwargs = dict(max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        plain = model.generate(**enc, **kwargs)
        assert G.share_prompt_prefill(model)
        shared = model.generate(**enc, **kwargs)
    assert torch.equal(plain.sequences, shared.sequences)
    for a, b in zip(plain.scores, shared.scores):
        assert torch.allclose(a, b, atol=1e-4)
    assert (model._gmai_prompts_requested, model._gmai_prompts_prefilled) == (4, 2)


def test_metrics_callback_writes_stable_fields(tmp_path):
    cb = G.MetricsCallback(tmp_path, ["format", "accuracy"])

    class State:
        global_step = 3

    cb.on_log(None, State(), None, logs={"reward": 0.5, "frac_reward_zero_std": 0.25, "rewards/format/mean": 1.0,
                                        "rewards/accuracy/mean": 0.0, "completions/mean_length": 12.0, "kl": 0.01})
    cb.on_log(None, State(), None, logs={"train_runtime": 3.0})  # end-of-run summary: not a step
    rows = G.read_metrics(tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["step"] == 3 and row["zero_signal_fraction"] == 0.25 and row["reward/format"] == 1.0
    assert row["reward/accuracy"] == 0.0 and row["completion_length"] == 12.0 and row["kl"] == 0.01
    assert G.plot_metrics(tmp_path)[0].exists()


def test_revisit_summary_compares_each_question_with_itself(tmp_path):
    rows = []
    for step, bonus in ((0, 0.0), (5, 0.5)):  # every question gains 0.5 on its second visit
        for q in range(8):
            rows.append({"step": step, "id": f"q{q}", "reward": 0.1 * q + bonus, "n": 4,
                         "rewards": {"accuracy": bonus}, "all_equal": step == 0 and q < 4})
    rows.append({"step": 9, "id": "once", "reward": 0.0, "n": 4, "rewards": {}, "all_equal": True})
    (tmp_path / G.QUESTION_REWARDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = G.revisit_summary(tmp_path)
    assert (summary["questions"], summary["revisited"], summary["improved"], summary["worsened"]) == (9, 8, 8, 0)
    assert summary["last_visit"] - summary["first_visit"] == pytest.approx(0.5)
    assert summary["p_value"] < 0.01
    assert (summary["zero_signal_first_visit"], summary["zero_signal_last_visit"]) == (0.5, 0.0)
    assert G.revisit_summary(tmp_path, "reward/accuracy")["last_visit"] == pytest.approx(0.5)
    assert G.revisit_summary(tmp_path / "missing")["revisited"] == 0


def test_recipes_load_and_reject_typos(tmp_path):
    r = load_r1_recipe(ROOT / "recipes" / "r1-tiny.yaml", ["grpo.max_steps=3", "grpo.learning_rate=1e-3"])
    assert r.grpo.max_steps == 3 and r.grpo.learning_rate == 1e-3 and r.grpo.rewards["accuracy"] == 1.0
    assert load_r1_recipe(ROOT / "recipes" / "r1-7b.yaml").grpo.use_vllm
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo: {num_generation: 4}\n")
    with pytest.raises(ValueError, match="num_generation"):
        load_r1_recipe(bad)


def test_tag_tokens_become_single_tokens_and_survive_decoding(setup, tmp_path):
    from gmai.model.factory import load_checkpoint
    from gmai.rl.pipeline import TAG_TOKENS, add_tag_tokens

    model, processor = create_model("tiny", corpus=["a plain corpus without any reasoning tags"] * 20, seed=0)
    plain = save_checkpoint(model, processor, tmp_path / "plain")
    path, added = add_tag_tokens(plain, tmp_path / "tags")
    assert added == list(TAG_TOKENS)
    model, processor = load_checkpoint(path)
    tok = processor.tokenizer
    text = "<think>round</think><answer>B</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert all(len(tok(t, add_special_tokens=False)["input_ids"]) == 1 for t in TAG_TOKENS)
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert add_tag_tokens(path, tmp_path / "again") == (path, [])  # nothing left to add


def test_export_parquet_layouts(setup, tmp_path):
    import pyarrow.parquet as pq

    result = CliRunner().invoke(app, ["rl", "export", str(setup["base"] / "q" / RL_FILE), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    verl = pq.read_table(tmp_path / "verl" / "train.parquet").to_pylist()
    easy = pq.read_table(tmp_path / "easyr1" / "train.parquet").to_pylist()
    assert len(verl) == len(easy) > 0
    assert verl[0]["reward_model"]["style"] == "rule" and verl[0]["prompt"][0]["content"].startswith("<image>")
    assert verl[0]["images"][0]["bytes"][:4] == b"\x89PNG"
    assert easy[0]["answer"] in "ABCD" and easy[0]["problem"].startswith("<image>")


@pytest.mark.slow
def test_grpo_cli_two_steps_writes_metrics_and_a_standard_checkpoint(setup, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "rl", "train", str(ROOT / "recipes" / "r1-tiny.yaml"), "grpo.max_steps=2", "grpo.max_completion_length=12",
        "grpo.beta=0.04",  # the recipe's default is 0; keep the reference-model (KL) path covered
        "grpo.answer_types=[choice]", "--out", str(out), "--model", str(setup["ckpt"]),
        "--questions", str(setup["base"] / "q" / RL_FILE)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("reward", "reward/format", "reward/accuracy", "zero_signal_fraction", "completion_length", "kl"):
            assert key in row and row[key] is not None, key
        assert 0.0 <= row["zero_signal_fraction"] <= 1.0
    assert (out / "grpo-metrics.png").stat().st_size > 0
    # per-question rewards add up to the step's mean reward that TRL logged
    per_question = [json.loads(line) for line in (out / G.QUESTION_REWARDS_FILE).read_text().splitlines()]
    for row, step_row in zip(sorted({q["step"] for q in per_question}), rows):
        batch = [q for q in per_question if q["step"] == row]
        mean = sum(q["reward"] * q["n"] for q in batch) / sum(q["n"] for q in batch)
        assert mean == pytest.approx(step_row["reward"], abs=1e-4)
        assert all(q["n"] == 4 and set(q["rewards"]) >= {"format", "accuracy"} for q in batch)
    summary = json.loads((out / "grpo-summary.json").read_text())
    assert summary["vision"]["prompts_prefilled"] < summary["vision"]["prompts_requested"]
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(out / "final")
    AutoProcessor.from_pretrained(out / "final")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
