"""No 500 for any well-formed JSON: strict types and bounds (as OpenAI's API), lone surrogates,
no request content echoed in errors, and a bad request failing alone (in-process, fake backend)."""

import json
import threading

import pytest
from fastapi.testclient import TestClient
from serve_fakes import FakeBackend

from gmai.serve.api import ServeConfig, create_app

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
MARK = "ZQXMARKERZQX"  # planted in bad values: it must never come back


def _app(backend=None, **overrides):
    config = ServeConfig(**{"model_name": "fake", "api_key": KEY, "batch_wait_ms": 1, "max_tokens_limit": 64,
                            **overrides})
    return create_app(backend or FakeBackend(), config)


@pytest.fixture(scope="module")
def client():
    with TestClient(_app()) as c:
        yield c


def _post(client, body) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/v1/chat/completions", headers=AUTH, content=raw)


def _body(**overrides):
    return {"model": "fake", "messages": [{"role": "user", "content": "hello"}], **overrides}


# OpenAI's API refuses these (its reference types them integer/number/boolean; no coercion).
@pytest.mark.parametrize("field,value", [
    ("max_tokens", "5"), ("max_tokens", True), ("max_tokens", 2.0), ("max_tokens", 0), ("max_tokens", 10**30),
    ("max_completion_tokens", "5"), ("temperature", "0.5"), ("temperature", True), ("temperature", -0.1),
    ("temperature", 2.5), ("top_p", "1"), ("top_p", 0), ("n", "2"), ("n", 1.0), ("n", 0), ("stream", "true"),
    ("stream", 1), ("seed", 2**64), ("seed", 2**63), ("seed", -(2**63) - 1), ("seed", "7"), ("seed", 1.5),
    ("frequency_penalty", 3), ("presence_penalty", "0"), ("top_logprobs", 21), ("logprobs", "yes"),
    ("stop", 5), ("stop", [1, 2]), ("model", 5), ("messages", "hi"), ("messages", {}), ("user", 7),
])
def test_loose_or_out_of_range_numbers_are_400_naming_the_field(client, field, value):
    r = _post(client, _body(**{field: value}))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] and error["param"].split(".")[0] == field and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("overrides", [
    {"temperature": 1e-320}, {"temperature": 5e-324}, {"temperature": 0}, {"temperature": 1},
    {"seed": 2**63 - 1}, {"seed": -(2**63)}, {"top_p": 1e-300, "temperature": 0.7}, {"max_tokens": 64},
])
def test_edge_values_within_bounds_are_served(client, overrides):
    assert _post(client, _body(**overrides)).status_code == 200


def test_tiny_temperature_is_greedy_not_a_division_overflow():
    from gmai.serve.api import ChatCompletionBody, generation_config

    body = ChatCompletionBody.model_validate_json(json.dumps(_body(temperature=1e-320)))
    assert generation_config(body, ServeConfig()).temperature == 0.0


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\ud83d b", "\\ude00\\ud83d"])
def test_lone_surrogates_are_400_explaining_why(client, escape):
    raw = ('{"model": "fake", "messages": [{"role": "user", "content": "x%sy"}]}' % escape).encode()
    r = _post(client, raw)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_unicode" and "surrogate" in error["message"]


def test_a_surrogate_pair_is_fine(client):
    raw = b'{"model": "fake", "messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    r = _post(client, raw)
    assert r.status_code == 200 and "\U0001F600" in r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("body", [
    _body(model=MARK * 400_000),  # a 5 MB model name
    _body(messages=[{"role": MARK, "content": "x"}]),
    _body(messages=[{"role": "user", "content": [{"type": MARK}]}]),
    _body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": MARK}}]}]),
    _body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://" + MARK}}]}]),
    _body(messages=[{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "data:image/png;base64," + MARK}}]}]),
    _body(max_tokens=MARK), _body(temperature=MARK), _body(stop=[MARK * 100]), _body(seed=MARK),
])
def test_errors_never_echo_request_content(client, body):
    r = _post(client, body)
    assert 400 <= r.status_code < 500, r.text
    assert MARK not in r.text and len(r.content) < 1000


@pytest.mark.parametrize("raw", [
    b"[]", b"null", b"5", b'"text"', b"{}", b'{"model": "fake"}', b'{"messages": []}',
    b'{"model": "fake", "messages": [5]}', b'{"model": "fake", "messages": [null]}',
    b'{"model": "fake", "messages": [{}]}', b'{"model": "fake", "messages": [{"role": null}]}',
    b'{"model": "fake", "messages": [{"role": "user", "content": 5}]}',
    b'{"model": "fake", "messages": [{"role": "user", "content": [5]}]}',
    b'{"model": "fake", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
    b'{"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    b'{"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]}',
    b'{"model": "fake", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}',
    b'{"model": "fake", "messages": [{"role": "system", "content": "only a system turn"}]}',
    b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream_options": 5}',
    b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], "response_format": 5}',
    b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e400}',
    b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
    b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], "temperature": Infinity}',
    b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], "seed": -0}',
    b'{"model": "fake", "messages": [{"role": "user", "content": "x\\u0000y"}]}',
    b'{"model": "fake", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"model": "fake", "messages": [{"role": "user", "content": "x"}], "extra": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b"\xff\xfe{}", b'{"model": "fake", "messages": [{"role": "user", "content": "\xff"}]}',
])
def test_odd_but_well_formed_or_malformed_bodies_are_never_a_500(client, raw):
    r = _post(client, raw)
    assert r.status_code < 500, r.text
    assert set(r.json()) in ({"error"}, {"id", "object", "created", "model", "choices", "usage"})


def test_bad_requests_fail_alone_and_the_others_share_one_model_call():
    # 6 concurrent requests; one is poisoned (its processor fails), one has an over-long prompt.
    backend = FakeBackend(delay=0.05, fail_on="poison", context_chars=2000)
    texts = ["ok0", "poison", "ok2", "x" * 3000, "ok4", "ok5"]
    with TestClient(_app(backend, batch_wait_ms=300)) as c:
        results = [None] * len(texts)

        def send(i):
            results[i] = _post(c, _body(messages=[{"role": "user", "content": texts[i]}]))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    codes = [r.status_code for r in results]
    assert codes == [200, 400, 200, 400, 200, 200], [r.text for r in results]
    assert results[1].json()["error"]["code"] == "unprocessable_input"
    assert results[3].json()["error"]["code"] == "context_length_exceeded"
    assert backend.batches == [4]  # the four good ones in one model call; the bad ones cost none
