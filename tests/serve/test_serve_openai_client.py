"""The real server process (`gmai serve` on a free 127.0.0.1 port) driven by the `openai` client.

The checkpoint is a tiny random-weight model made here (synthetic: its replies are gibberish),
so these tests check the protocol, limits and robustness, not answer quality.
"""

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import openai
import psutil
import pytest
from PIL import Image
from serve_fakes import huge_png

from gmai.infer.types import truncate_at_stop
from gmai.serve.process import ServerProcess

pytestmark = pytest.mark.slow

KEY = "sk-test-serve"
PATIENT_NAME = "CompressedSamples^CT1"  # in pydicom's CT_small.dcm header


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("allowed")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8)).save(root / "scan.png")
    log = root.parent / "server.log"
    proc = ServerProcess(tiny_checkpoint, api_key=KEY, log_path=log,
                         args=["--allowed-root", str(root), "--max-tokens-limit", "64", "--default-max-tokens", "16",
                               "--max-images", "8", "--batch-wait-ms", "5", "--torch-threads", "1"])
    with proc:
        proc.allowed_root, proc.log = root, log
        yield proc


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=60)


def _png_url(seed=0, size=(64, 48)) -> str:
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 255, size[::-1], dtype=np.uint8))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _ask(client, content, **kwargs):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                          **{"max_tokens": 12, **kwargs})


def _stream_text(client, content, **kwargs) -> tuple[str, str]:
    text, finish = "", None
    for chunk in _ask(client, content, stream=True, **kwargs):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


def _valid_request_succeeds(client) -> None:
    reply = _ask(client, [{"type": "image_url", "image_url": {"url": _png_url(1)}},
                          {"type": "text", "text": "What modality is this?"}], max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens >= 1


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_image_question_non_streaming(client):
    reply = _ask(client, [{"type": "image_url", "image_url": {"url": _png_url()}},
                          {"type": "text", "text": "Describe the image."}])
    choice = reply.choices[0]
    assert isinstance(choice.message.content, str) and choice.message.role == "assistant"
    assert reply.usage.prompt_tokens > 64  # the image's visual tokens are counted in the prompt
    assert choice.finish_reason in ("stop", "length")


def test_streaming_matches_non_streaming(client):
    content = "What modality is this? Describe the findings."
    full = _ask(client, content).choices[0]
    text, finish = _stream_text(client, content)
    assert text == full.message.content
    assert finish == full.finish_reason


def test_stop_strings_cut_the_reply_both_ways(client):
    content = "Summarise the report."
    full = _ask(client, content, max_tokens=16).choices[0].message.content
    words = full.split()
    assert len(words) >= 3, f"need a reply with a few words to pick a stop string from: {full!r}"
    stop = words[len(words) // 2]
    expected = truncate_at_stop(full, [stop]).strip()
    assert len(expected) < len(full)
    stopped = _ask(client, content, max_tokens=16, stop=[stop]).choices[0]
    assert stopped.message.content == expected and stopped.finish_reason == "stop"
    text, finish = _stream_text(client, content, max_tokens=16, stop=stop)
    assert text == expected and finish == "stop"


def test_n_and_sampling(client):
    reply = _ask(client, "Any findings?", n=3, temperature=1.0, seed=0)
    assert [c.index for c in reply.choices] == [0, 1, 2]


def test_local_path_under_the_allowed_root(client, server):
    reply = _ask(client, [{"type": "image_url", "image_url": {"url": str(server.allowed_root / "scan.png")}},
                          {"type": "text", "text": "Which organ?"}], max_tokens=4)
    assert reply.choices[0].message.content is not None


def test_dicom_upload_is_deidentified_and_never_logged(client, server):
    from pydicom.data import get_testdata_file

    raw = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert PATIENT_NAME.encode() in raw
    url = "data:application/dicom;base64," + base64.b64encode(raw).decode()
    reply = _ask(client, [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Modality?"}],
                 max_tokens=4)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert PATIENT_NAME.split("^")[0] not in server.log.read_text(errors="replace")


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def test_bad_request_suite_each_4xx_memory_bounded_server_stays_up(server, client):
    _valid_request_succeeds(client)  # warm up: allocator pools, model buffers
    baseline = _rss_mb(server.pid)
    raw = httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {KEY}"})
    tiny_png = _png_url(2, (8, 8))

    def message(parts):
        return {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": parts}]}

    cases = {
        "missing key": lambda: httpx.post(server.base_url + "/chat/completions",
                                          json=message([{"type": "text", "text": "hi"}])),
        "bad base64": lambda: raw.post("/v1/chat/completions", json=message(
            [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%not*base64%%%"}}])),
        "20k x 20k PNG": lambda: raw.post("/v1/chat/completions", json=message(
            [{"type": "image_url", "image_url": {
                "url": "data:image/png;base64," + base64.b64encode(huge_png(20_000, 20_000)).decode()}}])),
        "path outside root": lambda: raw.post("/v1/chat/completions", json=message(
            [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}])),
        "path traversal": lambda: raw.post("/v1/chat/completions", json=message(
            [{"type": "image_url", "image_url": {"url": "../../../../etc/hostname"}}])),
        "10 MB JSON garbage": lambda: raw.post("/v1/chat/completions", content=np.random.default_rng(0).integers(
            0, 256, 10 * 2**20, dtype=np.uint8).tobytes(), headers={"content-type": "application/json"}),
        "100 images": lambda: raw.post("/v1/chat/completions", json=message(
            [{"type": "image_url", "image_url": {"url": tiny_png}}] * 100 + [{"type": "text", "text": "?"}])),
        "max_tokens too large": lambda: raw.post("/v1/chat/completions", json={**message("hi"), "max_tokens": 10**6}),
    }
    statuses = {}
    for name, send in cases.items():
        response = send()
        statuses[name] = response.status_code
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:200])
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, name
        _valid_request_succeeds(client)  # the server is still up and answering
    assert statuses["missing key"] == 401 and statuses["path outside root"] == 403
    grown = _rss_mb(server.pid) - baseline
    print(f"server RSS {baseline:.0f} MB before the bad-request suite, grew {grown:+.1f} MB; statuses {statuses}")
    # one decoded 20k x 20k image alone would be 400 MB (1.2 GB as RGB)
    assert grown < 150, f"server RSS grew by {grown:.0f} MB over the bad-request suite"
    # the openai client maps these to typed exceptions
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError):
        _ask(client, [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}])


def test_infer_openai_backend_generates_captions_through_the_server(server):
    """The path the data engine's LLM generator, rejection sampling and `gmai eval` take."""
    from gmai.infer import ChatRequest, GenerationConfig, load_backend

    backend = load_backend(server.base_url, api_key=KEY)
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)) for _ in range(4)]
    requests = [ChatRequest("Write a one-sentence caption for this medical image.", [im]) for im in images]
    captions = backend.generate(requests, GenerationConfig(max_new_tokens=8), batch_size=4)
    assert len(captions) == 4 and all(isinstance(c, str) for c in captions)
    assert backend.name == "tiny"
    # same model, same greedy decoding: the HTTP path answers what the local path answers
    local = load_backend(str(server.command[2]))
    assert captions == local.generate(requests, GenerationConfig(max_new_tokens=8), batch_size=4)


def test_data_engine_llm_generator_runs_through_the_server(server):
    """gmai.data.generate.llm against this server: requests answered (JSON mode accepted, not
    enforced); the random-weight model's gibberish fails verification, so records fall back to
    templates, as the generator is designed to do."""
    import random

    from gmai.data.generate.llm import LLMGenerator
    from gmai.data.records import Record

    record = Record(image=np.zeros((32, 32), dtype=np.uint8), ref="synthetic-0", source="synthetic-lesion-cls",
                    task="classification", modality="CT", labels=["nodule"], label_set=["nodule", "normal"],
                    organ="lung")
    generator = LLMGenerator(base_url=server.base_url, model="tiny", api_key=KEY, max_tokens=24, cache_dir=None,
                             rate=0, max_retries=1, http_retries=0, timeout=60)
    samples = generator.generate(record, random.Random(0))
    assert generator.stats["llm_requests"] == 2, dict(generator.stats)  # first try + one retry, both answered
    assert generator.stats["llm_http_failed"] == 0, dict(generator.stats)
    assert samples and generator.stats["llm_ok"] + generator.stats["llm_fallback_to_template"] == 1


def test_no_process_of_the_server_has_the_key_on_its_command_line(server):
    root = psutil.Process(server.pid)
    processes = [root, *root.children(recursive=True)]  # the server and its decoding/validation workers
    assert len(processes) >= 2
    for process in processes:
        assert KEY not in " ".join(process.cmdline())


def test_bad_requests_in_a_batch_cost_it_at_most_3_model_calls(server):
    import threading

    def metrics():
        return httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).json()

    good = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    bodies = [good, {**good, "messages": [{"role": "user", "content": "x " * 30_000}]},  # over the context
              good, good, {**good, "seed": 2**64}, good]
    raw = [None, None, None, None, b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}', None]
    before = metrics()["generate_calls"]
    statuses = [0] * len(bodies)

    def send(i):
        headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
        content = raw[i] if raw[i] is not None else None
        r = httpx.post(server.base_url + "/chat/completions", headers=headers, timeout=60,
                       **({"content": content} if content else {"json": bodies[i]}))
        statuses[i] = r.status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200, 400, 200, 200, 400, 200]
    assert metrics()["generate_calls"] - before <= 3
