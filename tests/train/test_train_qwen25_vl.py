"""GMAI-VL-R1's base family, Qwen2.5-VL, as a whole-VLM start point (model.base=DIR): Stage III full and LoRA,
then the result reloads with plain transformers. The base is a tiny random-weight folder in the released format
(gmai.model.fixtures.write_qwen25_vl: Qwen2_5_VLConfig, the released chat template via TRL's byte-identical copy
trl/chat_templates/qwen2_5_vl.jinja, preprocessor_config.json with min/max pixels)."""

import subprocess
import sys
import textwrap

import pytest
from family_checks import assert_evaluates, assert_serves, stage3_on_base

from gmai.model.fixtures import released_template, write_qwen25_vl
from gmai.train.fixtures import write_synthetic_corpus

stage3 = stage3_on_base


@pytest.mark.slow
def test_qwen25_vl_base_stage3_full_and_lora_then_plain_reload(tmp_path):
    base = write_qwen25_vl(tmp_path / "base")
    data = write_synthetic_corpus(tmp_path / "data", n_images=8, n_text=2, image_size=64)
    full = stage3(base, data, tmp_path / "full")
    lora = stage3(base, data, tmp_path / "lora", "stages.3.lora.enabled=true", "stages.3.lora.r=4",
                  "stages.3.trainable=[llm]")
    for summary in (full, lora):
        assert summary[3]["steps"] == 2 and summary[3]["data"]["samples"] > 0
    assert lora[3]["params"]["trainable"]["total"] < full[3]["params"]["trainable"]["total"]
    assert_evaluates(tmp_path / "full" / "stage3", tmp_path / "eval")
    assert_serves(tmp_path / "full" / "stage3")
    for run in ("full", "lora"):
        path = tmp_path / run / "stage3"
        assert (path / "chat_template.jinja").read_text() == released_template("qwen2_5_vl")
        script = textwrap.dedent(f"""
            import sys
            from PIL import Image
            from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLImageProcessorPil
            path = {str(path)!r}
            model = AutoModelForImageTextToText.from_pretrained(path)
            tok = AutoTokenizer.from_pretrained(path)
            ip = Qwen2VLImageProcessorPil.from_pretrained(path)
            assert ip.size["longest_edge"] == 28 * 28 * 16  # max_pixels kept
            img = ip(images=[Image.new("RGB", (90, 70))], return_tensors="pt")
            n = int(img["image_grid_thw"].prod()) // 4
            msgs = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "Modality?"}}]}}]
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            text = text.replace("<|image_pad|>", "<|image_pad|>" * n)
            enc = tok([text], return_tensors="pt")
            out = model.generate(**enc, **img, max_new_tokens=3, do_sample=False)
            assert out.shape[1] > enc["input_ids"].shape[1] and "gmai" not in sys.modules
            print("OK", type(model).__name__)
        """)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "OK Qwen2_5_VLForConditionalGeneration" in result.stdout


def test_qwen25_vl_refuses_packing(tmp_path):
    base = write_qwen25_vl(tmp_path / "base")
    data = write_synthetic_corpus(tmp_path / "data", n_images=2, n_text=1, image_size=32)
    with pytest.raises(ValueError, match="packing is not supported for qwen2_5_vl"):
        stage3(base, data, tmp_path / "out", "stages.3.packing=true")

