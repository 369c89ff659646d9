"""A prompt that cannot fit the model's context is refused from its UTF-8 bytes, before any image
is decoded or the prompt rendered (gmai.serve.tokens); one that may fit goes on to exact
tokenization. The bound is checked against real tokenizer structures on adversarial text."""

import random

import pytest
from fastapi.testclient import TestClient
from serve_fakes import FakeBackend

from gmai.serve.api import ServeConfig, create_app
from gmai.serve.tokens import bytes_per_token_bound, min_tokens

KEY = "bound-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _qwen25_format_tokenizer():
    # Qwen2.5's tokenizer structure as released (NFC normalizer, Qwen2 split regex, byte-level BPE,
    # its added tokens), on a small trained vocabulary: gmai.model.fixtures.
    from gmai.model.fixtures import _qwen25_tokenizer

    return _qwen25_tokenizer()


def _gmai_tokenizer():
    from gmai.model.tokenizer import train_tokenizer

    return train_tokenizer(["the chest x-ray shows no effusion.   " * 20, "==== ---- >>>> " * 30], vocab_size=400)


def _adversarial_texts(tokenizer) -> list[str]:
    rng = random.Random(0)
    vocab = [t for t in tokenizer.get_vocab() if t.isprintable()]
    longest = max(vocab, key=len)
    specials = "".join(tokenizer.all_special_tokens)
    hangul_jamo = "\u1100\u1161\u11a8" * 300  # composes under NFC: 9 bytes -> one 3-byte syllable
    math_letters = "\U0001d400\U0001d41a" * 300  # NFKC: 4 bytes -> 1
    combining = "e\u0301a\u030a" * 300
    random_unicode = "".join(chr(rng.choice([rng.randrange(32, 0x7f), rng.randrange(0xa0, 0xd7ff),
                                             rng.randrange(0x10000, 0x1ffff)])) for _ in range(3000))
    return [longest * 200, " " * 5000, "\n" * 3000, specials * 200, hangul_jamo, math_letters, combining,
            random_unicode, "".join(rng.choice(vocab) for _ in range(2000)), "the chest x-ray " * 500]


@pytest.mark.parametrize("make", [_qwen25_format_tokenizer, _gmai_tokenizer])
def test_the_byte_bound_never_exceeds_the_real_token_count(make):
    tokenizer = make()
    bound = bytes_per_token_bound(tokenizer)
    assert bound is not None
    for text in _adversarial_texts(tokenizer):
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert tokens >= min_tokens(len(text.encode("utf-8")), bound), (text[:40], tokens, bound)


def test_tokenizers_that_drop_or_absorb_text_get_no_bound():
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()  # 1 MB of spaces is 0 tokens
    assert bytes_per_token_bound(PreTrainedTokenizerFast(tokenizer_object=core)) is None
    tokenizer = _gmai_tokenizer()
    assert bytes_per_token_bound(tokenizer) is not None
    tokenizer.add_tokens([AddedToken("<mask>", lstrip=True)])  # absorbs the spaces before it
    assert bytes_per_token_bound(tokenizer) is None


class _TokenizingBackend(FakeBackend):
    def __init__(self, context_length: int):
        super().__init__()
        self.tokenizer, self.context_length = _gmai_tokenizer(), context_length


def test_a_prompt_over_the_bound_is_refused_before_rendering_and_one_at_it_is_tokenized():
    backend = _TokenizingBackend(context_length=300)
    per_token = bytes_per_token_bound(backend.tokenizer)
    max_tokens = 20
    fits = "a" * ((300 - max_tokens) * per_token)  # at least 280 tokens + 20 = the context: may fit
    over = fits + "a"  # at least 281 tokens: cannot
    config = ServeConfig(model_name="fake", api_key=KEY, batch_wait_ms=1, max_prompt_chars=10**6)
    with TestClient(create_app(backend, config)) as c:
        def send(text):
            return c.post("/v1/chat/completions", headers=AUTH, json={
                "model": "fake", "max_tokens": max_tokens, "messages": [{"role": "user", "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,not-decoded"}}]}]})

        r = send(over)
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
        assert "at least 281 tokens" in r.json()["error"]["message"]
        assert backend.prepared == 0 and c.app.service.light_decoders.tasks == 0  # nothing rendered or decoded
        r = send(fits)
        assert r.json()["error"]["code"] == "invalid_base64"  # past the bound: on to decoding
        r = c.post("/v1/chat/completions", headers=AUTH, json={
            "model": "fake", "max_tokens": max_tokens, "messages": [{"role": "user", "content": fits}]})
        assert r.status_code == 200 and backend.prepared == 1  # ... and to exact tokenization
