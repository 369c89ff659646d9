"""Several images in one request (a volume as N slices) on a local checkpoint: one block of image tokens
per image, the same answer batched with single-image requests as alone, and the order of the images matters."""

import numpy as np
import pytest
from PIL import Image

from gmai.infer import ChatRequest, GenerationConfig, load_backend
from gmai.model import create_model, save_checkpoint

CORPUS = ["These 3 images are slices of one CT scan. On which slice is the tumor largest? Slice 2.",
          "What modality is this? CT.", "The liver is on the left of the image."] * 30


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    model, processor = create_model("tiny", corpus=CORPUS, seed=2)
    return load_backend(str(save_checkpoint(model, processor, tmp_path_factory.mktemp("ckpt") / "tiny")))


def _slices(n=3):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (96, 96), dtype=np.uint8)) for _ in range(n)]


def test_a_request_with_several_images_gets_one_image_block_each(backend):
    slices = _slices()
    enc = backend._encode([ChatRequest("On which slice is the tumor largest?", slices)])
    token = backend.processor.tokenizer.convert_tokens_to_ids(backend.processor.image_token)
    assert int((enc["input_ids"] == token).sum()) == 3 * 64 and enc["pixel_values"].shape[0] == 3


def test_multi_image_requests_batch_like_alone_and_image_order_matters(backend):
    config = GenerationConfig(max_new_tokens=6)
    slices = _slices()
    volume = ChatRequest("On which slice is the tumor largest?", slices)
    single = ChatRequest("What modality is this?", [_slices(1)[0]])
    batched = backend.generate([single, volume, single], config, batch_size=3)
    alone = backend.generate([volume], config, batch_size=1)[0]
    assert batched[1] == alone and batched[0] == batched[2]
    logits = [backend.model(**backend._encode([ChatRequest("Which slice?", order)])).logits[0, -1]
              for order in (slices, slices[::-1])]
    assert not np.allclose(logits[0].detach().numpy(), logits[1].detach().numpy(), atol=1e-5)


def test_the_server_answers_a_request_with_several_slices(backend):
    import base64
    import io

    from fastapi.testclient import TestClient

    from gmai.serve.api import ServeConfig, create_app

    def url(image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    parts = [{"type": "image_url", "image_url": {"url": url(im)}} for im in _slices(4)]
    parts.append({"type": "text", "text": "On which slice is the tumor largest?"})
    config = ServeConfig(model_name="tiny", api_key="k", batch_wait_ms=1)
    with TestClient(create_app(backend, config)) as client:
        reply = client.post("/v1/chat/completions", headers={"Authorization": "Bearer k"},
                            json={"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": parts}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["role"] == "assistant"
    assert reply.json()["usage"]["prompt_tokens"] > 4 * 64
