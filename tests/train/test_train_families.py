"""Whole VLMs of the families people fine-tune as ``model.base``, end to end per family: Stage III (2 steps) full
and LoRA, reload with plain transformers in a subprocess without gmai, 4 real VQA-RAD items through the eval
runner, one request through the server. Each base is a tiny random-weight folder in the family's released
format (``gmai model fixture FAMILY OUT``; sources cited in gmai.model.fixtures). Random weights: plumbing only.
Qwen2.5-VL's packing refusal and GRPO have their own files (test_train_qwen25_vl.py, tests/rl)."""

import json

import pytest
from family_checks import PLAIN_RELOAD, assert_evaluates, assert_plain_reload, assert_serves, stage3_on_base

from gmai.model import fixtures
from gmai.model.cli import FIXTURES
from gmai.model.families import family_for_type, load_base, part_modules
from gmai.train.fixtures import write_synthetic_corpus

# fixture name -> transformers class of the released checkpoints
FAMILY_CLASSES = {"qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration", "llava-1.5": "LlavaForConditionalGeneration", "gemma3": "Gemma3ForConditionalGeneration",
                  "internvl": "InternVLForConditionalGeneration", "llava-next": "LlavaNextForConditionalGeneration",
                  "llava-onevision": "LlavaOnevisionForConditionalGeneration",
                  "qwen3-vl": "Qwen3VLForConditionalGeneration", "qwen2-vl": "Qwen2VLForConditionalGeneration"}
# InternVLProcessor also builds a video processor (torchvision, absent here): the user's route without it is the
# tokenizer + GotOcr2 image processor, expanding <IMG_CONTEXT> as InternVLProcessor does (tiles x image_seq_length)
INTERNVL_RELOAD = """
import json, sys
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoTokenizer, GotOcr2ImageProcessorPil
for path in PATHS:
    model = AutoModelForImageTextToText.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    ip = GotOcr2ImageProcessorPil.from_pretrained(path)
    img = ip(images=[Image.new("RGB", (90, 70))], crop_to_patches=True, return_tensors="pt")
    n = img["pixel_values"].shape[0] * json.load(open(f"{path}/processor_config.json"))["image_seq_length"]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Modality?"}]}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    text = text.replace("<IMG_CONTEXT>", "<img>" + "<IMG_CONTEXT>" * n + "</img>")
    enc = tok([text], return_tensors="pt")
    out = model.generate(**enc, pixel_values=img["pixel_values"], max_new_tokens=3, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1] and "gmai" not in sys.modules
    print("OK", type(model).__name__)
"""
# LlavaOnevisionProcessor also builds a video processor: a plain-transformers user without torchvision builds it
# without one (the class check is the only obstacle)
ONEVISION_RELOAD = """
from transformers import AutoTokenizer, LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor

class ImagesOnly(LlavaOnevisionProcessor):
    def check_argument_for_proper_class(self, name, arg):
        return None if name == "video_processor" and arg is None else super().check_argument_for_proper_class(name, arg)

def images_only(path, model):
    return ImagesOnly(image_processor=LlavaOnevisionImageProcessorPil.from_pretrained(path),
                      tokenizer=AutoTokenizer.from_pretrained(path), video_processor=None,
                      chat_template=open(f"{path}/chat_template.jinja").read(),
                      num_image_tokens=model.config.vision_config.image_size ** 2 // 14 ** 2,
                      vision_feature_select_strategy="full")
""" + PLAIN_RELOAD.replace("AutoProcessor.from_pretrained(path)", "images_only(path, model)")

# Qwen2/2.5/3-VL processors also build a video processor: tokenizer + PIL image processor, <|image_pad|> expanded to the
# merged grid, and the image-token marks M-RoPE needs (as the processor returns them)
QWEN_VL_RELOAD = """
import sys
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLImageProcessorPil
for path in PATHS:
    model = AutoModelForImageTextToText.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    ip = Qwen2VLImageProcessorPil.from_pretrained(path)
    img = ip(images=[Image.new("RGB", (90, 70))], return_tensors="pt")
    n = int(img["image_grid_thw"].prod()) // 4
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Modality?"}]}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    enc = tok([text.replace("<|image_pad|>", "<|image_pad|>" * n)], return_tensors="pt")
    marks = (enc["input_ids"] == model.config.image_token_id).long()
    out = model.generate(**enc, **img, mm_token_type_ids=marks, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1] and "gmai" not in sys.modules
    print("OK", type(model).__name__)
"""
RELOAD_SCRIPTS = {"internvl": INTERNVL_RELOAD, "llava-onevision": ONEVISION_RELOAD, "qwen3-vl": QWEN_VL_RELOAD,
                  "qwen2-vl": QWEN_VL_RELOAD, "qwen2.5-vl": QWEN_VL_RELOAD}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(tmp_path_factory.mktemp("data"), n_images=8, n_text=2, image_size=64)


def write_fixture(name, out):
    return getattr(fixtures, FIXTURES[name])(out)


@pytest.mark.parametrize("name", FAMILY_CLASSES)
def test_fixture_loads_as_its_family_with_every_part(name, tmp_path):
    base = write_fixture(name, tmp_path / "base")
    model, processor = load_base(base)
    assert type(model).__name__ == FAMILY_CLASSES[name]
    family = family_for_type(json.loads((base / "config.json").read_text())["model_type"])
    parts = part_modules(model)
    assert set(parts) == {"vision", "projector", "llm"} and all(parts.values()), family.name
    owned = {part: {id(p) for m in mods for p in m.parameters()} for part, mods in parts.items()}
    assert set().union(*owned.values()) == {id(p) for p in model.parameters()}  # every weight has a part
    assert not (owned["vision"] & owned["llm"]) and not (owned["projector"] & (owned["vision"] | owned["llm"]))


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_CLASSES)
def test_family_base_stage3_full_and_lora_then_plain_reload_eval_and_serve(name, corpus, tmp_path):
    base = write_fixture(name, tmp_path / "base")
    template = json.loads((base / "chat_template.json").read_text())["chat_template"]
    full = stage3_on_base(base, corpus, tmp_path / "full")
    lora = stage3_on_base(base, corpus, tmp_path / "lora", "stages.3.lora.enabled=true", "stages.3.lora.r=4",
                          "stages.3.trainable=[llm]")
    for summary in (full, lora):
        assert summary[3]["steps"] == 2 and summary[3]["data"]["samples"] > 0
    assert lora[3]["params"]["trainable"]["total"] < full[3]["params"]["trainable"]["total"]
    paths = [tmp_path / run / "stage3" for run in ("full", "lora")]
    _, processor = load_base(base)
    for path in paths:  # the released template byte for byte, the image bounds (Qwen's min/max pixels, tiles) kept
        assert (path / "chat_template.jinja").read_text() == template
        assert load_base(path)[1].image_processor.to_dict() == processor.image_processor.to_dict()
    assert_plain_reload(paths, FAMILY_CLASSES[name], RELOAD_SCRIPTS.get(name, PLAIN_RELOAD))
    assert_evaluates(paths[0], tmp_path / "eval")
    assert_serves(paths[1])


def test_anyres_images_with_different_tile_counts_share_a_batch(tmp_path):
    """LLaVA-NeXT cuts each image into as many tiles as its aspect needs; a training batch pads the tile stacks
    (as the processor pads its own batches) and the model takes each image's own tiles."""
    import torch
    from PIL import Image

    from gmai.model.chat import encode_conversation
    from gmai.train.packing import pad_tiles

    model, processor = load_base(write_fixture("llava-next", tmp_path / "base"))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Modality?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "CT."}]}]
    encs = [encode_conversation(processor, msgs, [Image.new("RGB", size)]) for size in ((90, 70), (40, 160))]
    assert encs[0]["pixel_values"].shape[1] != encs[1]["pixel_values"].shape[1]
    width = max(len(e["input_ids"]) for e in encs)
    ids = torch.tensor([e["input_ids"] + [processor.tokenizer.pad_token_id] * (width - len(e["input_ids"]))
                        for e in encs])
    pixels = torch.cat(pad_tiles([e["pixel_values"] for e in encs]))
    out = model(input_ids=ids, pixel_values=pixels, image_sizes=torch.cat([e["image_sizes"] for e in encs]))
    assert out.logits.shape[:2] == ids.shape


@pytest.mark.parametrize("name,key", [("gemma3", "token_type_ids"), ("qwen3-vl", "mm_token_type_ids"),
                                      ("qwen2-vl", "mm_token_type_ids")])
def test_training_batches_mark_image_tokens_as_the_processor_does(name, key, tmp_path):
    from PIL import Image

    from gmai.model.chat import render_prompt
    from gmai.model.families import image_token_types

    model, processor = load_base(write_fixture(name, tmp_path / "base"))
    text = render_prompt(processor, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}])
    enc = processor(text=[text], images=[Image.new("RGB", (90, 70))], return_tensors="pt", add_special_tokens=False)
    marks = image_token_types(model, enc["input_ids"])
    assert set(marks) == {key} and marks[key].sum() > 0 and marks[key].tolist() == enc[key].tolist()


def test_remote_code_internvl_base_is_refused_in_one_line(tmp_path):
    """OpenGVLab/InternVL3-* (not -hf) ships remote code (config.json model_type internvl_chat + auto_map):
    without the flag one line asks for it; with it, one line says the family is unsupported and names the -hf one."""
    from typer.testing import CliRunner

    from gmai.cli import app

    data = write_synthetic_corpus(tmp_path / "data", n_images=2, n_text=1, image_size=32)
    base = tmp_path / "InternVL3-1B"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({
        "model_type": "internvl_chat", "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel"}}))
    (base / "model.safetensors").write_bytes(b"")

    def line(*extra):
        result = CliRunner().invoke(app, ["train", "recipes/tiny.yaml", f"model.base={base}", *extra, "--data",
                                          str(data), "--out", str(tmp_path / "out"), "--stages", "3"])
        lines = [x for x in result.output.splitlines() if x.startswith("gmai train:")]
        assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
        return lines[0]

    assert "model.trust_remote_code=true" in line() and str(base) in line()
    refused = line("model.trust_remote_code=true")
    assert "not supported" in refused and "InternVL3-1B-hf" in refused and str(base) in refused


GRPO_FAMILIES = ["llava-1.5", "gemma3", "internvl", "qwen2-vl", "qwen3-vl"]  # Qwen2.5-VL: tests/rl


@pytest.mark.slow
@pytest.mark.parametrize("name", GRPO_FAMILIES)
def test_family_base_grpo_two_steps(name, tmp_path):
    """GMAI-VL-R1's GRPO (2 steps through `gmai rl train`) from the family's base, and the result reloads."""
    from family_checks import assert_grpo_runs

    base = write_fixture(name, tmp_path / "base")
    corpus = write_synthetic_corpus(tmp_path / "corpus", n_images=8, seed=2, image_size=64)
    final = assert_grpo_runs(base, corpus, tmp_path / "r1")
    assert json.loads((final / "config.json").read_text())["architectures"] == [FAMILY_CLASSES[name]]


@pytest.mark.parametrize("name", ["llava-next", "llava-onevision"])
def test_grpo_refuses_anyres_families_in_one_line(name, tmp_path):
    from typer.testing import CliRunner

    from gmai.cli import app
    from gmai.rl.questions import RL_FILE, build_questions

    base = write_fixture(name, tmp_path / "base")
    build_questions(write_synthetic_corpus(tmp_path / "c", n_images=4, seed=2, image_size=32), tmp_path / "q",
                    kinds=("choice",), seed=0)
    result = CliRunner().invoke(app, ["rl", "train", "recipes/r1-tiny.yaml", "grpo.max_steps=1", "--out",
                                      str(tmp_path / "run"), "--model", str(base), "--questions",
                                      str(tmp_path / "q" / RL_FILE)])
    said = " ".join(result.output.split())  # the CLI's one error line, wrapped to the terminal's width
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{base}: GRPO does not support the {name.replace('-', '_')} family yet" in said
