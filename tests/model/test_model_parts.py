"""The paper's model from pretrained parts in the released on-disk formats (tiny random-weight fixtures).

Fixture formats: see gmai.model.fixtures (Qwen2.5-Instruct tokens from pytorch/torchtune
torchtune/models/qwen2_5/_tokenizer.py; chat templates from TRL's byte-identical copies of the released
ones, trl/chat_templates/qwen2_5.jinja; CLIP as openai/clip-vit-large-patch14-336 ships it).
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from gmai.model import create_model, get_preset
from gmai.model.chat import encode_conversation, original_template, render_prompt
from gmai.model.fixtures import released_template, write_clip, write_qwen25_instruct_lm, write_siglip
from gmai.model.freeze import apply_freeze_plan
from gmai.model.loading import ModelLoadError


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    return {"lm": write_qwen25_instruct_lm(root / "lm"), "clip": write_clip(root / "clip"),
            "clip_vision": write_clip(root / "clipv", full=False), "siglip": write_siglip(root / "siglip")}


def build(parts, vision="clip", llm="lm"):
    return create_model(get_preset("gmai-vl-7b").with_paths(str(parts[vision]), str(parts[llm])))


def test_architecture_comes_from_the_folders(parts):
    model, processor = build(parts)
    lm_cfg = json.loads((parts["lm"] / "config.json").read_text())
    clip_cfg = json.loads((parts["clip"] / "config.json").read_text())["vision_config"]
    assert model.config.text_config.hidden_size == lm_cfg["hidden_size"]
    assert model.config.vision_config.hidden_size == clip_cfg["hidden_size"]
    assert model.config.vision_config.patch_size == clip_cfg["patch_size"] == 14
    assert model.config.image_seq_length == (clip_cfg["image_size"] // 14) ** 2
    # the LM's own template (released Qwen2.5) and tokens are kept
    assert original_template(processor.chat_template) == released_template("qwen2_5")
    assert processor.tokenizer.chat_template == released_template("qwen2_5")
    assert processor.tokenizer.eos_token == "<|im_end|>" and processor.tokenizer.pad_token == "<|endoftext|>"


def test_weights_are_the_folders_weights(parts):
    import torch
    from safetensors.torch import load_file

    model, _ = build(parts)
    lm = load_file(parts["lm"] / "model.safetensors")
    assert torch.equal(model.lm_head.weight[: lm["lm_head.weight"].shape[0]], lm["lm_head.weight"])
    assert torch.equal(model.model.language_model.layers[0].mlp.up_proj.weight,
                       lm["model.layers.0.mlp.up_proj.weight"])
    clip = load_file(parts["clip"] / "model.safetensors")
    key = "encoder.layers.1.self_attn.q_proj.weight"  # transformers 5 drops the vision_model. prefix on load
    assert torch.equal(model.model.vision_tower.get_parameter(key), clip["vision_model." + key])


@pytest.mark.parametrize("vision", ["clip_vision", "siglip"])
def test_other_vision_folders(parts, vision):
    model, processor = build(parts, vision=vision)
    image = Image.fromarray(np.zeros((30, 50, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Modality?"}]},
                {"role": "assistant", "content": "CT."}]
    enc = encode_conversation(processor, messages, images=[image])
    out = model(input_ids=__import__("torch").tensor([enc["input_ids"]]), pixel_values=enc["pixel_values"])
    assert out.logits.shape[1] == len(enc["input_ids"])


def test_labels_turn_by_turn_equal_trl_generation_markers(parts):
    """Qwen2.5's released template has no generation markers; TRL's patched copy adds them. The turn-by-turn
    mask on the released template equals the marker mask on the patched one, except that TRL's markers also
    take the layout newlines around a reply (the prompt already ends in "assistant\n", and generation stops
    at <|im_end|>), which gmai does not supervise."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(parts["lm"])
    messages = [{"role": "user", "content": "What modality is this?"}, {"role": "assistant", "content": "CT."},
                {"role": "user", "content": "Where is the lesion?"},
                {"role": "assistant", "content": "In the left upper region."}]

    class P:
        tokenizer = tok
        chat_template = released_template("qwen2_5")

    enc = encode_conversation(P, messages)
    ref = tok.apply_chat_template(messages, chat_template=released_template("qwen2_5_training"), tokenize=True,
                                  return_dict=True, return_assistant_tokens_mask=True)
    assert enc["input_ids"] == list(ref["input_ids"])
    differ = [t for t, a, b in zip(enc["input_ids"], enc["assistant_mask"], ref["assistant_masks"]) if a != bool(b)]
    assert differ and all(tok.decode([t]) == "\n" for t in differ)
    assert sum(enc["assistant_mask"]) == sum(ref["assistant_masks"]) - len(differ)
    supervised = tok.decode([t for t, m in zip(enc["input_ids"], enc["assistant_mask"]) if m])
    assert supervised == "CT.<|im_end|>In the left upper region.<|im_end|>"


def test_image_prompt_renders_with_string_only_template(parts):
    _, processor = build(parts)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Modality?"}]}]
    assert render_prompt(processor, messages) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nModality?<|im_end|>\n<|im_start|>assistant\n")


def test_structured_messages_render_as_the_lm_template_renders_strings(parts):
    """Code that passes content parts (TRL's GRPO, processor.apply_chat_template with images) gets exactly the
    text the LM's own template gives for string content with the image token inline."""
    from transformers.utils.chat_template_utils import render_jinja_template

    _, processor = build(parts)
    image = Image.fromarray(np.zeros((30, 50, 3), dtype=np.uint8))
    parts_msgs = [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Modality?"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "CT."}]},
                  {"role": "user", "content": [{"type": "text", "text": "Where?"}]}]
    string_msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>\nModality?"},
                   {"role": "assistant", "content": "CT."}, {"role": "user", "content": "Where?"}]
    expected = render_jinja_template(conversations=[string_msgs], chat_template=released_template("qwen2_5"),
                                     add_generation_prompt=True)[0][0]
    assert processor.apply_chat_template(parts_msgs, add_generation_prompt=True, tokenize=False) == expected
    enc = processor.apply_chat_template(parts_msgs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt")
    n_image = list(enc["input_ids"][0]).count(processor.tokenizer.convert_tokens_to_ids("<image>"))
    assert n_image == build(parts)[0].config.image_seq_length and enc["pixel_values"].shape[0] == 1


def test_freeze_plan_on_parts_model(parts):
    model, _ = build(parts)
    counts = apply_freeze_plan(model, ["projector"])
    assert counts["projector"] > 0 and counts["vision"] == 0 and counts["llm"] == 0


# ---------------------------------------------------------------- bad input: one line naming the folder

def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_folder_with_files_missing(parts, tmp_path):
    broken = tmp_path / "lm"
    shutil.copytree(parts["lm"], broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as err:
        create_model(get_preset("gmai-vl-7b").with_paths(str(parts["clip"]), str(broken)))
    assert str(broken) in one_line(err) and "no *.safetensors" in one_line(err)
    (broken / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json is missing") as err:
        create_model(get_preset("gmai-vl-7b").with_paths(str(parts["clip"]), str(broken)))
    one_line(err)


def test_weights_that_do_not_match_the_config(parts, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "clip"
    shutil.copytree(parts["clip"], broken)
    weights = load_file(broken / "model.safetensors")
    del weights["vision_model.encoder.layers.1.mlp.fc2.bias"]  # a missing key
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as err:
        create_model(get_preset("gmai-vl-7b").with_paths(str(broken), str(parts["lm"])))
    assert "missing keys encoder.layers.1.mlp.fc2.bias" in one_line(err) and str(broken) in one_line(err)
    weights = load_file(parts["clip"] / "model.safetensors")
    weights["vision_model.encoder.layers.7.mlp.fc1.weight"] = torch.zeros(2, 2)  # an unexpected key (no layer 7)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as err:
        create_model(get_preset("gmai-vl-7b").with_paths(str(broken), str(parts["lm"])))
    assert "unexpected keys" in one_line(err) and "layers.7.mlp.fc1.weight" in one_line(err)
    weights = load_file(parts["clip"] / "model.safetensors")
    key = "vision_model.post_layernorm.weight"
    weights[key] = torch.zeros(weights[key].shape[0] + 1)  # a shape mismatch
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as err:
        create_model(get_preset("gmai-vl-7b").with_paths(str(broken), str(parts["lm"])))
    assert str(broken) in one_line(err) and "post_layernorm" in one_line(err)


def test_hub_name_remote_code_and_unsupported(parts, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        create_model(get_preset("gmai-vl-7b").with_paths(str(parts["clip"]), "Qwen/Qwen2.5-7B-Instruct"))
    assert "local paths only" in one_line(err)
    remote = tmp_path / "internlm"
    shutil.copytree(parts["lm"], remote)
    cfg = json.loads((remote / "config.json").read_text())
    cfg.update(model_type="internlm2", auto_map={"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"})
    (remote / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError) as err:
        create_model(get_preset("gmai-vl-7b").with_paths(str(parts["clip"]), str(remote)))
    assert "model.trust_remote_code=true" in one_line(err) and str(remote) in one_line(err)
    vis = tmp_path / "vis"
    shutil.copytree(parts["clip"], vis)
    cfg = json.loads((vis / "config.json").read_text())
    cfg["model_type"] = "siglip2"
    (vis / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError) as err:
        create_model(get_preset("gmai-vl-7b").with_paths(str(vis), str(parts["lm"])))
    assert "'siglip2' is not supported" in one_line(err)


def test_fixture_command_writes_a_loadable_folder(tmp_path):
    from typer.testing import CliRunner

    from gmai.cli import app
    from gmai.model.loading import load_vision_tower

    result = CliRunner().invoke(app, ["model", "fixture", "clip-vision", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    vision, kind = load_vision_tower(tmp_path / "v")
    assert kind == "clip" and type(vision).__name__ == "CLIPVisionModel"
    bad = CliRunner().invoke(app, ["model", "fixture", "nope", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown family 'nope'" in bad.output
