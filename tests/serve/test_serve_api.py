"""The API in-process (FastAPI TestClient, fake backend): routes, auth, limits, error shape, SSE."""

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_fakes import FakeBackend, NoPrepareBackend

from gmai.serve.api import ServeConfig, create_app

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client():
    config = ServeConfig(model_name="fake", api_key=KEY, max_images=3, max_tokens_limit=64, max_n=4,
                         max_body_bytes=1024 * 1024, batch_wait_ms=1)
    with TestClient(create_app(FakeBackend(), config)) as c:
        yield c


def _png_url(size=(8, 8)) -> str:
    buf = io.BytesIO()
    Image.new("L", size, 128).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _body(**overrides):
    body = {"model": "fake", "messages": [{"role": "user", "content": "hello"}]}
    body.update(overrides)
    return body


def _assert_openai_error(response, status: int, code=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_health_needs_no_key_everything_else_does(client):
    assert client.get("/health").json()["status"] == "ok"
    for method, path in [("get", "/v1/models"), ("post", "/v1/chat/completions"), ("get", "/nope"),
                         ("get", "/docs")]:
        _assert_openai_error(getattr(client, method)(path), 401, "invalid_api_key")
    _assert_openai_error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)


def test_models_lists_the_served_model(client):
    data = client.get("/v1/models", headers=AUTH).json()
    assert [m["id"] for m in data["data"]] == ["fake"]
    assert client.get("/v1/models/fake", headers=AUTH).json()["id"] == "fake"
    _assert_openai_error(client.get("/v1/models/other", headers=AUTH), 404, "model_not_found")


def test_completion_shape_and_multimodal_message(client):
    content = [{"type": "image_url", "image_url": {"url": _png_url()}}, {"type": "text", "text": "what?"}]
    r = client.post("/v1/chat/completions", headers=AUTH,
                    json=_body(messages=[{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": content}], n=2))
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["object"] == "chat.completion" and data["model"] == "fake"
    assert [c["message"]["content"] for c in data["choices"]] == ["echo what? images=1"] * 2
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]


def test_streaming_sse_chunks(client):
    with client.stream("POST", "/v1/chat/completions", headers=AUTH,
                       json=_body(stream=True, stream_options={"include_usage": True})) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert text == "echo hello images=0"  # stop strings in streams: LocalBackend.stream, tested below
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("overrides,param", [
    ({"max_tokens": 65}, "max_tokens"), ({"n": 5}, "n"), ({"stream": True, "n": 2}, "n"),
    ({"temperature": 3}, "temperature"), ({"messages": []}, "messages"), ({"stop": ["a"] * 5}, "stop"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0].type"),
    ({"tools": [{"type": "function"}]}, "tools"),
])
def test_invalid_parameters_are_400_naming_the_param(client, overrides, param):
    error = _assert_openai_error(client.post("/v1/chat/completions", headers=AUTH, json=_body(**overrides)), 400)
    assert error["param"] == param


def test_unknown_model_is_404(client):
    _assert_openai_error(client.post("/v1/chat/completions", headers=AUTH, json=_body(model="gpt-4")), 404,
                         "model_not_found")


def test_too_many_images_refused_before_decoding(client):
    # 4 > max_images=3; the parts are not even valid images: the count is checked first
    parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}] * 4
    _assert_openai_error(client.post("/v1/chat/completions", headers=AUTH,
                                     json=_body(messages=[{"role": "user", "content": parts}])), 400, "too_many_images")


def test_body_limit_is_413_and_garbage_is_400(client):
    big = b"x" * (1024 * 1024 + 1)
    _assert_openai_error(client.post("/v1/chat/completions", headers={**AUTH, "content-type": "application/json"},
                                     content=big), 413, "request_too_large")
    _assert_openai_error(client.post("/v1/chat/completions", headers={**AUTH, "content-type": "application/json"},
                                     content=b"{not json"), 400, "invalid_json")
    assert client.post("/v1/chat/completions", headers=AUTH, json=_body()).status_code == 200


def test_images_in_assistant_turns_are_refused(client):
    parts = [{"type": "image_url", "image_url": {"url": _png_url()}}]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": parts}]
    _assert_openai_error(client.post("/v1/chat/completions", headers=AUTH, json=_body(messages=messages)), 400)


def test_overloaded_server_answers_503():
    config = ServeConfig(model_name="fake", max_queue=1, batch_wait_ms=1)
    app = create_app(FakeBackend(), config)
    with TestClient(app) as c:
        app.fastapi.state.batcher._pending.append(None)  # noqa: SLF001 - simulate a full queue
        try:
            r = c.post("/v1/chat/completions", json=_body())
        finally:
            app.fastapi.state.batcher._pending.clear()
    _assert_openai_error(r, 503, "overloaded")
    assert r.headers["retry-after"] == "1"


def test_json_response_format_is_accepted_but_flagged_unenforced(client):
    r = client.post("/v1/chat/completions", headers=AUTH, json=_body(response_format={"type": "json_object"}))
    assert r.status_code == 200 and r.headers["x-gmai-unenforced"] == "response_format"
    r = client.post("/v1/chat/completions", headers=AUTH, json=_body(response_format={"type": "text"}))
    assert r.status_code == 200 and "x-gmai-unenforced" not in r.headers


def test_slow_generation_times_out_with_504():
    config = ServeConfig(model_name="fake", request_timeout_s=0.2, batch_wait_ms=1)
    with TestClient(create_app(FakeBackend(delay=1.0), config)) as c:
        _assert_openai_error(c.post("/v1/chat/completions", json=_body()), 504, "timeout")
        assert c.get("/health").status_code == 200


def test_concurrent_body_budget_answers_503():
    config = ServeConfig(model_name="fake", max_body_bytes=1000, body_budget_bytes=1000)
    app = create_app(FakeBackend(), config)
    with TestClient(app) as c:
        app.bodies_held = 990  # as if other uploads were being read right now
        _assert_openai_error(c.post("/v1/chat/completions", json=_body()), 503, "overloaded")
        app.bodies_held = 0
        assert c.post("/v1/chat/completions", json=_body()).status_code == 200
        assert app.bodies_held == 0  # released after each request


def test_large_images_are_shrunk_after_decoding():
    from gmai.serve.images import ImageLimits, load_image_url

    image = load_image_url(_png_url((3000, 1000)), ImageLimits(max_side=1344), "p")
    assert image.size == (1344, 448)


def test_serve_refuses_a_public_host_without_a_key(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gmai.cli import app

    monkeypatch.delenv("GMAI_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "without an API key" in result.output


def test_a_failing_generation_is_a_500_in_openai_shape_and_the_server_stays_up():
    # A backend that cannot check requests before generating (a remote one): its failure is the server's.
    config = ServeConfig(model_name="fake", batch_wait_ms=1)
    with TestClient(create_app(NoPrepareBackend(fail_on="poison"), config), raise_server_exceptions=False) as c:
        error = _assert_openai_error(c.post("/v1/chat/completions", json=_body(
            messages=[{"role": "user", "content": "poison"}])), 500)
        assert error["type"] == "server_error" and "poison" not in error["message"]  # no content echoed
        assert c.post("/v1/chat/completions", json=_body()).status_code == 200
