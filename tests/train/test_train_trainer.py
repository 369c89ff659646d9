"""End-to-end trainer behaviour on a SYNTHETIC corpus with a tiny model (seconds per run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gmai.model.freeze import apply_freeze_plan, count_parameters
from gmai.train.config import config_from_dict
from gmai.train.fixtures import write_synthetic_corpus
from gmai.train.trainer import NAN_AT_STEP, TrainingDiverged, train

STAGE = {"per_device_batch_size": 2, "max_length": 256, "packing": True, "log_every": 1,
         "mixture": {"core_med_caption": 1.0, "report": 1.0, "core_med_instruction": 1.0, "text_dialogue": 1.0}}


def tiny_tree(**stage_overrides):
    stages = {
        1: {**STAGE, "trainable": ["projector"], "lr": 3e-3, "max_steps": 3},
        2: {**STAGE, "trainable": ["projector", "vision"], "lr": 1e-3, "max_steps": 3},
        3: {**STAGE, "trainable": ["projector", "vision", "llm"], "lr": 1e-3, "max_steps": 3, "quality_filter": True},
    }
    for k, extra in stage_overrides.items():
        stages[int(k)].update(extra)
    return {"model": {"preset": "tiny", "tokenizer_vocab_size": 600},
            "data": {"max_records": 16, "groups": [{"group": "text_dialogue", "has_image": False},
                                                   {"group": "report", "id_contains": ["#report#"]},
                                                   {"group": "core_med_caption", "subset": ["MM-Caption"]}],
                     "default_group": "core_med_instruction"},
            "run": {"seed": 0, "tensorboard": True, "plot": True, "torch_threads": 1},
            "stages": stages}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_images=16, image_size=64, n_text=6)


def weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


@pytest.mark.slow
def test_three_stages_write_hf_checkpoints_with_the_freeze_plan(corpus, tmp_path):
    out = tmp_path / "out"
    summary = train(config_from_dict(tiny_tree()), corpus, out)
    assert sorted(summary) == [1, 2, 3]
    for k in (1, 2, 3):
        folder = out / f"stage{k}"
        for name in ("model.safetensors", "config.json", "processor_config.json", "tokenizer.json",
                     "chat_template.jinja", "README.md"):
            assert (folder / name).is_file(), f"{folder}/{name} missing"
    # what changed between consecutive stages is exactly the stage's trainable parts
    s1, s2, s3 = (weights(out / f"stage{k}") for k in (1, 2, 3))
    part = lambda key: key.removeprefix("model.").split(".")[0]  # noqa: E731 (saved keys may be either layout)
    changed_2 = {part(k) for k in s1 if not torch.equal(s1[k], s2[k])}
    assert changed_2 == {"multi_modal_projector", "vision_tower"}
    changed_3 = {k for k in s2 if not torch.equal(s2[k], s3[k])}
    assert any("language_model" in k and "layers" in k for k in changed_3)
    assert any("lm_head" in k for k in changed_3)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    starts = {m["stage"]: m for m in metrics if m["event"] == "stage_start"}
    assert starts[1]["params"]["trainable"]["total"] == starts[1]["params"]["trainable"]["projector"]
    assert starts[2]["params"]["trainable"]["llm"] == 0 and starts[2]["params"]["trainable"]["vision"] > 0
    assert starts[3]["params"]["trainable"]["total"] == starts[3]["params"]["all"]["total"]
    assert starts[3]["data"]["quality_dropped"]["caption shorter than 3 words"] >= 1
    steps = [m for m in metrics if m["event"] == "step"]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s"} <= set(steps[0])
    assert (out / "training_curves.png").stat().st_size > 1000 and (out / "plots" / "stage3.png").is_file()
    assert list((out / "tensorboard" / "stage1").glob("events.out.tfevents.*"))
    assert not (out / "checkpoints" / "stage1").exists()  # step checkpoints are removed once a stage is done
    # rerunning skips completed stages
    again = train(config_from_dict(tiny_tree()), corpus, out, stages=[3])
    assert again[3]["last_loss"] == summary[3]["last_loss"]


def test_trainable_counts_match_the_freeze_plan():
    from gmai.model import create_model

    model, _ = create_model("tiny", corpus=["a b c d e f g"] * 20)
    total = count_parameters(model)["all"]
    assert total["projector"] + total["vision"] + total["llm"] == total["total"]
    for plan in (["projector"], ["projector", "vision"], ["projector", "vision", "llm"], ["llm"]):
        counts = apply_freeze_plan(model, plan)
        assert counts["total"] == sum(total[p] for p in plan)
        for part in ("projector", "vision", "llm"):
            assert counts[part] == (total[part] if part in plan else 0)


def test_later_stage_needs_the_previous_checkpoint(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="run stage 1 first"):
        train(config_from_dict(tiny_tree()), corpus, tmp_path / "out", stages=[2])


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv(NAN_AT_STEP, "3")
    tree = tiny_tree(**{"1": {"max_steps": 4, "save_every": 2}})
    with pytest.raises(TrainingDiverged, match=r"step 3/4: the loss is nan.*Last good checkpoint: .*step-000002"):
        train(config_from_dict(tree), corpus, tmp_path / "out", stages=[1])
    assert (tmp_path / "out" / "checkpoints" / "stage1" / "step-000002" / "trainer_state.json").is_file()
    assert not (tmp_path / "out" / "stage1").exists()


def _run_stage1_subprocess(corpus, out, tree, env_extra):
    script = ("import json, sys\nfrom gmai.train.config import config_from_dict\nfrom gmai.train.trainer import train\n"
              "train(config_from_dict(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3], stages=[1])\n")
    env = {**os.environ, **env_extra}
    tree = json.loads(json.dumps(tree))  # int keys -> str; config_from_dict accepts both
    return subprocess.run([sys.executable, "-c", script, json.dumps(tree), str(corpus), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(corpus, tmp_path):
    tree = tiny_tree(**{"1": {"max_steps": 6, "save_every": 2, "trainable": ["projector", "llm"]}})
    crashed = _run_stage1_subprocess(corpus, tmp_path / "resumed", tree, {"GMAI_TRAIN_CRASH_AFTER_STEP": "5"})
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    ckpts = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints" / "stage1").glob("step-*"))
    assert ckpts == ["step-000002", "step-000004"] and not (tmp_path / "resumed" / "stage1").exists()
    summary = train(config_from_dict(tree), corpus, tmp_path / "resumed", stages=[1])  # picks up step 4
    metrics = (tmp_path / "resumed" / "metrics.jsonl").read_text()
    assert '"event": "resume"' in metrics and "step-000004" in metrics
    straight = train(config_from_dict(tree), corpus, tmp_path / "straight", stages=[1])
    a, b = weights(tmp_path / "resumed" / "stage1"), weights(tmp_path / "straight" / "stage1")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert summary[1]["last_loss"] == pytest.approx(straight[1]["last_loss"], abs=1e-6)


def test_lora_stage_merges_into_a_standard_checkpoint_and_qlora_needs_a_gpu(corpus, tmp_path):
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}
    tree = tiny_tree(**{"1": {"trainable": ["projector", "llm"], "max_steps": 2, "lora": lora}})
    train(config_from_dict(tree), corpus, tmp_path / "out", stages=[1])
    saved = weights(tmp_path / "out" / "stage1")
    assert not any("lora" in k for k in saved)  # adapters merged: a plain LLaVA checkpoint
    metrics = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    params = next(m for m in metrics if m["event"] == "stage_start")["params"]
    assert 0 < params["trainable"]["llm"] < 0.1 * params["all"]["llm"]  # only the adapters train in the LM
    assert params["trainable"]["projector"] == params["all"]["projector"]
    if not torch.cuda.is_available():
        qlora = tiny_tree(**{"1": {"trainable": ["llm"], "lora": {**lora, "quantize_4bit": True}}})
        with pytest.raises(RuntimeError, match="QLoRA .* needs a CUDA GPU"):
            train(config_from_dict(qlora), corpus, tmp_path / "q", stages=[1])
