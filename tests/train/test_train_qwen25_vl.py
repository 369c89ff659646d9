"""GMAI-VL-R1's base family, Qwen2.5-VL, as a whole-VLM start point (model.base=DIR). Its end-to-end run (Stage III
full and LoRA, plain reload, eval, serve) is tests/train/test_train_families.py[qwen2.5-vl], GRPO is
tests/rl/test_rl_grpo_qwen25_vl.py; here, what only the Qwen-VL families do: a stage with packing is refused
(M-RoPE positions come from the image grid). The base is a tiny random-weight folder in the released format
(gmai.model.fixtures.write_qwen25_vl)."""

import pytest
from family_checks import stage3_on_base

from gmai.model.fixtures import write_qwen25_vl
from gmai.train.fixtures import write_synthetic_corpus


def test_qwen25_vl_refuses_packing(tmp_path):
    base = write_qwen25_vl(tmp_path / "base")
    data = write_synthetic_corpus(tmp_path / "data", n_images=2, n_text=1, image_size=32)
    with pytest.raises(ValueError, match="packing is not supported for qwen2_5_vl"):
        stage3_on_base(base, data, tmp_path / "out", "stages.3.packing=true")
