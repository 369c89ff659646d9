"""LocalBackend.prepare (render + tokenize off the model thread) gives the same replies as encoding in
the model call, for a batch mixing text-only and image requests, streaming included; per-request
stopping ends one row of a batch at the next token."""

import pytest
from PIL import Image

from gmai.infer.types import ChatRequest, GenerationConfig

pytestmark = pytest.mark.slow  # builds the tiny checkpoint


@pytest.fixture(scope="module")
def backend(tiny_checkpoint):
    from gmai.infer import load_backend

    return load_backend(str(tiny_checkpoint), device="cpu")


def _requests():
    return [ChatRequest(prompt="hello there"),
            ChatRequest(prompt="a longer question about this image, please", images=[Image.new("RGB", (64, 48), 30)]),
            ChatRequest(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}])]


def test_prepared_batches_reply_exactly_as_unprepared_ones(backend):
    config = GenerationConfig(max_new_tokens=12)
    requests = _requests()
    plain = backend.complete(requests, config)
    prepared = backend.complete(requests, config, prepared=[backend.prepare(r, config) for r in requests])
    assert [[c.text, c.prompt_tokens, c.completion_tokens] for g in plain for c in g] == \
           [[c.text, c.prompt_tokens, c.completion_tokens] for g in prepared for c in g]
    request = requests[1]
    streamed = "".join(backend.stream(request, config, prepared=backend.prepare(request, config)))
    assert streamed == plain[1][0].text


def test_prepare_refuses_a_prompt_over_the_context(backend):
    from gmai.infer.types import PromptTooLongError

    with pytest.raises(PromptTooLongError):
        backend.prepare(ChatRequest(prompt="word " * 5000), GenerationConfig(max_new_tokens=8))


def test_should_stop_ends_one_row_at_the_next_token(backend):
    calls = {"n": 0}

    def stop_second():
        calls["n"] += 1
        return calls["n"] > 3

    out = backend.complete(_requests(), GenerationConfig(max_new_tokens=40),
                           should_stop=[lambda: False, stop_second, lambda: False])
    assert [g[0].completion_tokens for g in out] == [40, 4, 40]
