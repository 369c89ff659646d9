import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from gmai.model import create_model, get_preset, list_presets, save_checkpoint
from gmai.model.factory import require_local_path

CORPUS = ["A CT image of the chest with a nodule in the left lung.", "Is there a lesion? Yes.",
          "What modality is this? MR, ultrasound, X-ray, fundus photography, pathology."] * 30


@pytest.fixture(scope="module")
def tiny():
    return create_model("tiny", corpus=CORPUS)


def test_presets_are_declared():
    assert {"tiny", "gmai-vl-7b"} <= set(list_presets())
    # the 7B preset names only the projector and defaults: the architecture comes from the folders
    assert get_preset("gmai-vl-7b").vision is None and get_preset("gmai-vl-7b").text is None
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("nope")


def test_hub_name_is_refused_with_a_clear_error():
    with pytest.raises(FileNotFoundError, match="local paths only"):
        require_local_path("openai/clip-vit-large-patch14-336", "vision encoder")


def test_chat_template_masks_only_the_assistant_reply(tiny):
    _, processor = tiny
    image = Image.fromarray(np.zeros((40, 60), dtype=np.uint8))  # grayscale, not square
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Modality?"}]},
                {"role": "assistant", "content": "CT."}]
    enc = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"][0], enc["assistant_masks"][0]
    supervised = processor.tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert supervised == "CT.<|im_end|>"
    # the image expands into exactly the preset's number of visual tokens
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert list(ids).count(image_id) == get_preset("tiny").vision.num_image_tokens


def test_checkpoint_loads_and_generates_without_gmai(tiny, tmp_path):
    model, processor = tiny
    save_checkpoint(model, processor, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
    script = textwrap.dedent(f"""
        import sys
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor
        path = {str(tmp_path / 'ckpt')!r}
        proc = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path)
        msgs = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What is shown?"}}]}}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        enc = proc(text=[text], images=[Image.new("L", (50, 30))], return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=4, do_sample=False)
        assert out.shape[1] > enc["input_ids"].shape[1]
        assert "gmai" not in sys.modules
        print("OK", type(model).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OK LlavaForConditionalGeneration" in result.stdout


def test_turn_by_turn_labels_equal_the_generation_markers_on_the_tiny_template(tiny):
    """The tiny preset's own template has {% generation %} markers: both ways must supervise the same tokens."""
    from gmai.model.chat import encode_conversation

    _, processor = tiny
    image = Image.fromarray(np.zeros((40, 60), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Modality?"}]},
                {"role": "assistant", "content": "CT."}, {"role": "user", "content": "Where?"},
                {"role": "assistant", "content": "Left upper region."}]
    ref = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ours = encode_conversation(processor, messages, images=[image])
    assert ours["input_ids"] == list(ref["input_ids"][0])
    assert ours["assistant_mask"] == [bool(m) for m in ref["assistant_masks"][0]]
