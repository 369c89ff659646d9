"""Gradient accumulation: k micro-batches of n rows give the same update as one batch of k*n rows
(the loss is normalised by the supervised tokens of the whole global batch, not per micro-batch)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from gmai.train.config import load_recipe
from gmai.train.fixtures import write_synthetic_corpus
from gmai.train.trainer import train


def one_step(data, out, batch, accum):
    overrides = ["stages.0.enabled=false", "stages.2.enabled=false", "stages.3.enabled=false",
                 "stages.1.max_steps=1", f"stages.1.per_device_batch_size={batch}", f"stages.1.grad_accum={accum}",
                 "stages.1.packing=false", "stages.1.group_by_length=false", "stages.1.save_every=0",
                 "stages.1.trainable=[projector,vision,llm]", "stages.1.warmup_ratio=0",
                 # AdamW's first step is ~lr*sign(g): float noise flips it where g ~ 0. With eps >> |g| the step
                 # is lr*g/eps = g here, so comparing weights compares gradients.
                 "stages.1.lr=1000", "stages.1.adam_eps=1000", "stages.1.weight_decay=0", "stages.1.max_grad_norm=1e9",
                 "run.tensorboard=false", "run.plot=false"]
    train(load_recipe("recipes/tiny.yaml", overrides), data, out)
    return load_file(out / "stage1" / "model.safetensors")


@pytest.mark.slow
def test_accumulating_k_micro_batches_equals_one_k_times_larger_batch(tmp_path):
    data = write_synthetic_corpus(tmp_path / "data", n_images=10, n_text=0, image_size=32)
    one = one_step(data, tmp_path / "one", batch=4, accum=1)
    acc = one_step(data, tmp_path / "acc", batch=1, accum=4)
    for key, w in one.items():
        assert torch.allclose(w, acc[key], atol=1e-6, rtol=1e-5), key
    # the compared step is not a no-op: both runs applied a non-zero gradient (lr * g / eps = g here)
    for run in ("one", "acc"):
        steps = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        assert [m["grad_norm"] for m in steps if m["event"] == "step"][0] > 1e-3
