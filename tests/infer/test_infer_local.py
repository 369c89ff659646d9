import numpy as np
import pytest
from PIL import Image

from gmai.infer import ChatRequest, GenerationConfig, load_backend
from gmai.infer.openai_backend import to_openai_messages
from gmai.model import create_model, save_checkpoint

CORPUS = ["A CT image of the chest with a nodule in the left lung.", "Is there a lesion? Yes.",
          "What modality is this? MR, ultrasound, X-ray, fundus photography, pathology."] * 30


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    model, processor = create_model("tiny", corpus=CORPUS, seed=1)
    path = save_checkpoint(model, processor, tmp_path_factory.mktemp("ckpt") / "tiny")
    return load_backend(str(path))


def _requests():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)) for h, w in [(64, 80), (128, 128), (30, 90)]]
    return [ChatRequest("What modality is this?", [images[0]]),
            ChatRequest("Is there a lesion in the left lung, and where exactly is it located?", [images[1]]),
            ChatRequest("Describe.", [images[2]]),
            ChatRequest("A text-only question with no image at all?")]


def test_batched_generation_matches_one_at_a_time(backend):
    config = GenerationConfig(max_new_tokens=8)
    requests = _requests()
    batched = backend.generate(requests, config, batch_size=4)
    single = [backend.generate([r], config, batch_size=1)[0] for r in requests]
    assert batched == single
    assert len(batched) == 4


def test_sampling_returns_several_sequences_per_request(backend):
    out = backend.generate(_requests()[:2], GenerationConfig(max_new_tokens=4, temperature=1.0,
                                                             num_return_sequences=3, seed=0))
    assert len(out) == 2 and all(len(group) == 3 for group in out)


def test_openai_messages_carry_images_as_data_urls():
    request = ChatRequest("Which organ?", [Image.new("L", (8, 8))], system="Be brief.")
    messages = to_openai_messages(request)
    assert [m["role"] for m in messages] == ["system", "user"]
    parts = messages[1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "Which organ?"}
