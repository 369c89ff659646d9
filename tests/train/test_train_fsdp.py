"""2-process FSDP2 on CPU (gloo), launched as a user would: ``accelerate launch --config_file
recipes/accelerate/fsdp.yaml``. Train, check that the parameters really are sharded (a silent fall-back to data
parallel holds every parameter on every rank and fails here), SIGKILL the run after a step checkpoint, resume,
and reload the consolidated checkpoint with plain transformers. SYNTHETIC data; tiny random-weight models."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from gmai.model.fixtures import write_qwen25_vl
from gmai.train.fixtures import write_synthetic_corpus

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))

# The launched script: gmai's trainer, plus a probe that keeps the sharded model's logits on one training row just
# before the stage is saved (all ranks run the forward; rank 0 writes them with the batch it used).
SCRIPT = """
import json, sys
import torch
from gmai.train import trainer
from gmai.train.config import config_from_dict
from gmai.train.packing import collate

save = trainer.finish_stage

def probe_then_save(run):
    rows = [[0]]
    batch = collate(rows, run.encoded, run.encoder.pixels, run.processor.tokenizer.pad_token_id)
    if not run.stage.packing:
        batch = trainer.unpacked(batch, [len(run.encoded[0])])
    with torch.no_grad():
        logits = run.model(**batch, use_cache=False).logits
    if run.accelerator.is_main_process:
        torch.save({"batch": dict(batch), "logits": logits}, run.out / "probe.pt")
    return save(run)

trainer.finish_stage = probe_then_save
trainer.train(config_from_dict(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3])
"""

# Plain transformers, no gmai: the consolidated checkpoint must give the trained (sharded) model's logits.
RELOAD = """
import sys, torch
from transformers import AutoModelForImageTextToText
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1]).eval()
probe = torch.load(sys.argv[2])
with torch.no_grad():
    logits = model(**probe["batch"], use_cache=False).logits
assert "gmai" not in sys.modules
print("max_abs_diff", float((logits - probe["logits"]).abs().max()), type(model).__name__)
"""


def stage_tree(**stage):
    # eps >> |g| makes AdamW's step lr*m/eps, linear in the gradients (as in test_train_distributed): comparing
    # weights then compares the gradients the set-ups computed, not float-noise sign flips of near-zero gradients.
    # Weight decay (x0.9 per step at lr 1000) also tells a skipped parameter (no gradient in one process, e.g. the
    # CLIP layer after the feature layer; the vision tower in a batch without images) from one FSDP reduced a zero
    # gradient for: without the trainer's drop_unused_grads the first test fails on that layer (checked).
    base = {"trainable": ["projector", "vision", "llm"], "lr": 1000.0, "adam_eps": 1000.0, "weight_decay": 1e-4,
            "max_steps": 4,
            "per_device_batch_size": 1, "grad_accum": 2, "max_length": 256, "packing": True, "log_every": 1,
            "mixture": {"core_med_caption": 1.0, "core_med_instruction": 1.0, "text_dialogue": 1.0}}
    return {"model": {"preset": "tiny", "tokenizer_vocab_size": 600}, "data": {"max_records": 12},
            "run": {"seed": 0, "tensorboard": False, "plot": False, "torch_threads": 1},
            "stages": {"1": {**base, **stage}}}


def trainer_script(tmp_path) -> Path:
    script = tmp_path / "run_fsdp.py"
    script.write_text(SCRIPT)
    return script


def launch_fsdp(tmp_path, tree, data, out, port) -> list[str]:
    script = trainer_script(tmp_path)
    return [ACCELERATE, "launch", "--config_file", str(ROOT / "recipes/accelerate/fsdp.yaml"), "--main_process_port",
            str(port), str(script), json.dumps(tree), str(data), str(out)]


def launch_cli(tmp_path, tree, data, out, port) -> list[str]:
    """The command the README gives: ``accelerate launch --config_file fsdp.yaml -m gmai.cli train RECIPE ...``."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps(tree))  # JSON is YAML
    return [ACCELERATE, "launch", "--config_file", str(ROOT / "recipes/accelerate/fsdp.yaml"), "--main_process_port",
            str(port), "-m", "gmai.cli", "train", str(recipe), "--data", str(data), "--out", str(out)]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run(cmd):
    result = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def events(out, name):
    lines = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if m["event"] == name]


def assert_sharded(out, world=2):
    """Each rank holds about 1/world of every parameter, as DTensor shards (a replica would hold all of them)."""
    checks = events(out, "shard_check")
    distributed = events(out, "run_start")[0]["distributed"]
    assert len(checks) == 1, f"no shard check in the log: the run was not sharded ({distributed})"
    check = checks[0]
    assert len(check["ranks"]) == world, check
    for rank in check["ranks"]:
        assert rank["dtensor_params"] == rank["params"] > 0, rank
        assert rank["local_numel"] <= rank["total_numel"] / world * 1.05, rank
    assert sum(r["local_numel"] for r in check["ranks"]) == check["ranks"][0]["total_numel"]
    assert events(out, "run_start")[0]["sharding"] == "fsdp2"
    assert not events(out, "replica_check")


def assert_reloads_with_plain_transformers(tmp_path, out, stage="stage1"):
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    result = run([sys.executable, str(script), str(Path(out) / stage), str(Path(out) / "probe.pt")])
    diff = float(result.stdout.split()[1])
    assert diff < 1e-4, result.stdout  # fp32, same weights; only the sharded vs whole matmul order differs
    return result.stdout.split()[2]


def kill_after_checkpoint(cmd, out, step_dir: str) -> None:
    """Start the launch, SIGKILL the launcher and both ranks once a step checkpoint is complete."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = Path(out) / "checkpoints" / "stage1" / step_dir / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not marker.is_file():
        assert proc.poll() is None, "the run ended before its checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    victims = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (Path(out) / "stage1" / "gmai_stage.json").exists(), "killed too late: the stage had finished"


def weights(out, stage="stage1"):
    return load_file(str(Path(out) / stage / "model.safetensors"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_images=12, image_size=64, n_text=6)


TREE = stage_tree(max_steps=4, save_every=2)


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):
    """One uninterrupted 2-process FSDP run (step checkpoints at step 2 as in the killed run)."""
    tmp = tmp_path_factory.mktemp("straight")
    run(launch_fsdp(tmp, TREE, corpus, tmp / "out", 29531))
    return tmp / "out"


@pytest.mark.slow
def test_fsdp_two_processes_shard_match_one_process_and_reload_in_plain_transformers(corpus, straight, tmp_path):
    assert_sharded(straight)
    one_tree = stage_tree(max_steps=4, save_every=2, per_device_batch_size=2)  # same global batch, one process
    run([sys.executable, str(trainer_script(tmp_path)), json.dumps(one_tree), str(corpus), str(tmp_path / "one")])
    assert events(tmp_path / "one", "run_start")[0]["sharding"] is None
    fsdp_losses = [m["loss"] for m in events(straight, "step")]
    one_losses = [m["loss"] for m in events(tmp_path / "one", "step")]
    assert len(fsdp_losses) == 4 and fsdp_losses == pytest.approx(one_losses, rel=1e-4, abs=1e-5)
    a, b = weights(straight), weights(tmp_path / "one")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert assert_reloads_with_plain_transformers(tmp_path, straight) == "LlavaForConditionalGeneration"


@pytest.mark.slow
def test_fsdp_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_result(corpus, straight, tmp_path):
    killed = tmp_path / "killed"
    kill_after_checkpoint(launch_cli(tmp_path, TREE, corpus, killed, 29533), killed, "step-000002")
    assert [p.name for p in (killed / "checkpoints" / "stage1").glob("step-*")] == ["step-000002"]
    run(launch_cli(tmp_path, TREE, corpus, killed, 29533))  # the same command again resumes
    (resume,) = events(killed, "resume")
    assert Path(resume["checkpoint"]).name == "step-000002" and resume["step"] == 2
    # Same data plan, model and optimizer restored from their shards, scheduler and RNG per rank, same reduction
    # order: the resumed steps repeat the uninterrupted ones. 1e-6 leaves room for float noise only (a resume
    # without the optimizer's shards fails it).
    resumed_losses = [m["loss"] for m in events(killed, "step")][-2:]
    straight_losses = [m["loss"] for m in events(straight, "step")][2:]
    assert resumed_losses == pytest.approx(straight_losses, abs=1e-6)
    a, b = weights(killed), weights(straight)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.slow
def test_fsdp_trains_a_qwen25_vl_base_and_reloads_it_in_plain_transformers(tmp_path):
    base = write_qwen25_vl(tmp_path / "base")
    data = write_synthetic_corpus(tmp_path / "data", n_images=8, n_text=2, image_size=64)
    tree = stage_tree(max_steps=2, packing=False, lr=1e-3, adam_eps=1e-8)
    tree["model"] = {"preset": "tiny", "base": str(base)}
    run(launch_fsdp(tmp_path, tree, data, tmp_path / "out", 29535))
    assert_sharded(tmp_path / "out")
    before, after = load_file(str(base / "model.safetensors")), weights(tmp_path / "out")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)  # it trained
    name = assert_reloads_with_plain_transformers(tmp_path, tmp_path / "out")
    assert name == "Qwen2_5_VLForConditionalGeneration"


def test_fsdp_launch_settings_gmai_cannot_honour_are_one_line_errors(monkeypatch):
    from types import SimpleNamespace

    from gmai.train.sharding import Fsdp, fsdp_from_launch, shard_model

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        fsdp_from_launch()
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    with pytest.raises(ValueError, match="fsdp_offload_params: true is not supported"):
        fsdp_from_launch()
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "false")
    assert fsdp_from_launch() == Fsdp(reshard_after_forward=True)
    assert os.environ["ACCELERATE_USE_FSDP"] == "false"  # accelerate must not wrap the model as well
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert fsdp_from_launch() is None
    with pytest.raises(ValueError, match="LoRA under FSDP is not supported"):
        shard_model(SimpleNamespace(peft_config={}), Fsdp(), None)

