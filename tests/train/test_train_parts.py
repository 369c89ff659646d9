"""The gmai-vl-7b recipe as a user runs it: local folders of pretrained parts in the released formats
(Qwen2.5-Instruct LM with its released chat template, a full CLIP model), Stages I-III, then the result
reloads and generates in plain transformers (no gmai import) with the LM's own template.
The folders are tiny random-weight fixtures (gmai.model.fixtures), so this tests plumbing, not quality."""

import json
import subprocess
import sys
import textwrap

import pytest
from family_checks import assert_evaluates, assert_grpo_runs, assert_serves

from gmai.model.fixtures import released_template, write_clip, write_qwen25_instruct_lm
from gmai.train.config import load_recipe
from gmai.train.fixtures import write_synthetic_corpus
from gmai.train.trainer import train


@pytest.mark.slow
def test_gmai_vl_7b_recipe_trains_three_stages_from_real_format_parts(tmp_path):
    lm, clip = write_qwen25_instruct_lm(tmp_path / "lm"), write_clip(tmp_path / "clip")
    data = write_synthetic_corpus(tmp_path / "data", n_images=12, n_text=4, image_size=64)
    overrides = [f"model.llm_path={lm}", f"model.vision_path={clip}", "run.mixed_precision=no",
                 "run.tensorboard=false", "run.plot=false"]
    for k in (1, 2, 3):
        overrides += [f"stages.{k}.max_steps=2", f"stages.{k}.per_device_batch_size=2", f"stages.{k}.grad_accum=2",
                      f"stages.{k}.max_length=512", f"stages.{k}.save_every=0"]
    cfg = load_recipe("recipes/gmai-vl-7b.yaml", overrides)
    summary = train(cfg, data, tmp_path / "run")
    assert sorted(summary) == [1, 2, 3] and all(info["steps"] == 2 for info in summary.values())
    assert all(info["data"]["samples"] > 0 for info in summary.values())  # assistant labels found in every stage
    final = tmp_path / "run" / "stage3"
    assert (final / "chat_template.jinja").read_text() == released_template("qwen2_5")
    script = textwrap.dedent(f"""
        import sys
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor
        path = {str(final)!r}
        proc = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path)
        # Qwen2.5's template takes string content: the image token goes inline, as in LLaVA data
        msgs = [{{"role": "user", "content": "<image>\\nWhat modality is this?"}}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        assert text.startswith("<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud."), text
        enc = proc(text=[text], images=[Image.new("RGB", (80, 60))], return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
        assert out.shape[1] > enc["input_ids"].shape[1]
        assert "gmai" not in sys.modules
        print("OK", type(model).__name__, model.config.text_config.model_type)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK LlavaForConditionalGeneration qwen2" in result.stdout
    assert_evaluates(final, tmp_path / "eval")
    assert_serves(final)
    lora = train(load_recipe("recipes/gmai-vl-7b.yaml", overrides + [
        f"model.init_from={tmp_path / 'run' / 'stage2'}", "stages.3.lora.enabled=true", "stages.3.lora.r=4",
        "stages.3.trainable=[projector,llm]"]), data, tmp_path / "lora", stages=[3])
    assert lora[3]["params"]["trainable"]["total"] < summary[3]["params"]["trainable"]["total"]
    from safetensors.torch import load_file

    assert not any("lora" in key for key in load_file(tmp_path / "lora" / "stage3" / "model.safetensors"))  # merged
    r1 = assert_grpo_runs(final, data, tmp_path / "r1")
    assert (r1 / "chat_template.jinja").read_text() == released_template("qwen2_5")  # the LM's own, as released
    done = json.loads((final / "gmai_stage.json").read_text())
    assert done["start_from"].endswith("stage2")

