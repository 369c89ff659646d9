"""The OpenAI-compatible API: ``/v1/models``, ``/v1/chat/completions`` (streaming or not), ``/health``,
``/metrics``.

Serve any local checkpoint that :func:`gmai.infer.load_backend` loads (gmai checkpoints and other
Hugging Face image-text-to-text folders)::

    app = create_app(backend, ServeConfig(model_name="tiny", api_key="secret"))

Every request is bounded, cheapest check first: connection count per client address and the time
to send the request head (:mod:`gmai.serve.connections`), body size and read time, body structure
(a byte-level count of JSON objects), then strict types and bounds on every field (as OpenAI's API:
``max_tokens: "5"`` is refused), message and content-part counts, prompt characters, image count
and pixels (from the header, before decoding), then the exact prompt tokens (rendered and
tokenized off the model's thread). Large bodies are validated, and images decoded, in worker
processes with a time and memory budget (:mod:`gmai.serve.workers`); text-only requests never wait
on them. Every refusal is a 4xx in OpenAI's error shape (503 when the server is full, 504 when a
request runs past its time), never echoes request content, and fails that request alone. A
request whose client disconnects stops generating at the next token. Logs carry the method,
path, status and timing, never message or image content.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request  # module level: FastAPI resolves route annotations here

from gmai.infer.types import ChatRequest, Completion, GenerationConfig, PromptTooLongError
from gmai.serve.batching import DynamicBatcher, QueueFullError
from gmai.serve.errors import APIError, bad_request, error_body, overloaded
from gmai.serve.images import ImageLimits, decode_cost, decode_images
from gmai.serve.tokens import bytes_per_token_bound, min_tokens
from gmai.serve.workers import WorkerPool, map_large_allocations, release_free_memory

log = logging.getLogger("gmai.serve")

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logit_bias", "audio", "prediction")
# Hard caps of the request schema (a ServeConfig may set lower ones). OpenAI's API states no
# message-count limit; these bound the work one request can ask for.
MAX_MESSAGES = 1024
MAX_CONTENT_PARTS = 256
MAX_STOP_CHARS = 256
SEED_RANGE = (-(2 ** 63), 2 ** 63 - 1)  # int64, what torch.manual_seed and OpenAI accept
# Sampling at a temperature this close to 0 is greedy decoding (logits / 1e-320 overflow to inf).
MIN_SAMPLING_TEMPERATURE = 1e-3


@dataclass
class ServeConfig:
    model_name: str = "gmai"
    api_key: str | None = None  # None: no auth (only allowed on a loopback host, see cli)
    allowed_root: Path | None = None  # local image paths are refused unless set
    max_body_bytes: int = 20 * 1024 * 1024
    body_timeout_s: float = 30.0  # a client must finish sending its body within this (after the head)
    head_timeout_s: float = 10.0  # ... and its request line + headers within this
    keep_alive_timeout_s: float = 5.0  # idle time between requests on one connection
    max_connections_per_address: int = 128  # beyond: the address's oldest idle connection is closed
    max_connections: int = 900
    max_messages: int = 256
    max_content_parts: int = 64  # per message
    max_images: int = 8
    max_image_pixels: int = 25_000_000
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_side: int = 1344  # decoded images are shrunk to this longest side (0: keep full size)
    # Image decoding runs in two lanes of worker processes, chosen by the price of a request's images
    # read from their headers (gmai.serve.images.decode_cost): requests up to light_decode_units go
    # to their own light lane, so a valid image never waits behind a costly (or hostile) one.
    decode_workers: int = 2  # processes of the costly lane (niced: they yield the CPU)
    light_decode_workers: int = 2  # processes of the light lane
    light_decode_units: int = 8_000_000  # ~ two 2000 x 2000 PNGs
    max_decode_units: int = 150_000_000  # per request (refused beyond, from the headers)
    # Per-request CPU-time budget: decode_base_s + units / decode_units_per_s (a quarter of the
    # measured rate, ~40 M PNG pixels per CPU-second), never over decode_timeout_s. CPU time, so a
    # busy machine does not fail valid images; decode_wall_timeout_s bounds the wait (then 503).
    decode_base_s: float = 2.0
    decode_units_per_s: float = 10_000_000
    decode_timeout_s: float = 20.0
    decode_wall_timeout_s: float = 60.0
    decode_memory_mb: int = 1024  # per decoding worker, beyond its size after imports
    inline_parse_bytes: int = 256 * 1024  # bodies up to this are validated on the event loop (< ~5 ms)
    max_prompt_chars: int = 65_536
    default_max_tokens: int = 256
    max_tokens_limit: int = 1024
    max_n: int = 8
    max_stop: int = 4
    request_timeout_s: float = 120.0
    max_batch: int = 16  # 1 = no batching
    batch_wait_ms: float = 10.0
    max_queue: int = 64  # requests in flight (decoding, queued, generating) beyond this get 503
    body_budget_bytes: int = 128 * 1024 * 1024  # all request bodies held at once; beyond: 503
    created: int = field(default_factory=lambda: int(time.time()))

    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_image_pixels=self.max_image_pixels, max_images=self.max_images,
                           max_image_bytes=self.max_image_bytes, allowed_root=self.allowed_root,
                           max_side=self.max_image_side, max_decode_units=self.max_decode_units)

    def decode_budget_s(self, units: int) -> float:
        return min(self.decode_timeout_s, self.decode_base_s + units / self.decode_units_per_s)

    def max_json_objects(self) -> int:
        """A bound on ``{`` bytes in a valid body: messages and parts, braces inside the prompt's
        text, and slack for small extra fields. Images (base64) hold none."""
        return self.max_messages * (self.max_content_parts + 3) + self.max_prompt_chars + 4096


# ---------------------------------------------------------------------------------- request schema
# strict=True: no coercion ("5" is not 5, true is not 1, 2.0 is not an int), as OpenAI's API.
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ImageURL(_Strict):
    url: str
    detail: str | None = None


class ContentPart(_Strict):
    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None


class Message(_Strict):
    role: str
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)] | None = Field(
        None, union_mode="left_to_right")
    name: str | None = None


class ChatCompletionBody(_Strict):
    # other OpenAI fields are ignored unless listed in UNSUPPORTED
    model: str
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, allow_inf_nan=False)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    user: str | None = Field(None, max_length=256)


# ---------------------------------------------------------------------------------- parsing (cheap first)
def parse_body(raw: bytes, config: ServeConfig) -> ChatCompletionBody:
    """Bytes -> a validated body, or an APIError (400) that names the field and never the value.

    Runs in a worker process for large bodies. The structure bound is a byte count (~1 ms per MB),
    so a body of a million empty messages is refused before it is parsed."""
    if raw.count(b"{") > config.max_json_objects():
        raise bad_request(f"request body has too many JSON objects (more than {config.max_json_objects()}): "
                          f"at most {config.max_messages} messages of {config.max_content_parts} content parts",
                          "messages", "too_many_messages")
    try:
        body = ChatCompletionBody.model_validate_json(raw)
    except ValidationError as err:
        raise _validation_error(err) from None
    if len(body.messages) > config.max_messages:
        raise bad_request(f"{len(body.messages)} messages exceed this server's limit of {config.max_messages}",
                          "messages", "too_many_messages")
    for i, message in enumerate(body.messages):
        if isinstance(message.content, list) and len(message.content) > config.max_content_parts:
            raise bad_request(f"{len(message.content)} content parts exceed this server's limit of "
                              f"{config.max_content_parts} per message", f"messages[{i}].content",
                              "too_many_content_parts")
    return body


def _validation_error(err: ValidationError) -> APIError:
    first = (err.errors(include_url=False, include_input=False) or [{}])[0]
    kind = first.get("type", "")
    if kind == "json_invalid":
        reason = str((first.get("ctx") or {}).get("error", "malformed"))
        if "surrogate" in reason or "hex escape" in reason:
            return bad_request("request body is not valid Unicode text: a \\u escape in the range "
                               "\\ud800-\\udfff must be half of a surrogate pair, and a lone one encodes "
                               f"no character ({reason})", None, "invalid_unicode")
        return bad_request(f"request body is not valid JSON ({reason})", None, "invalid_json")
    if kind == "model_type":
        return bad_request("request body must be a JSON object", None, "invalid_json")
    loc = [str(x) for x in first.get("loc", ())]
    if kind == "too_long" and loc == ["messages"]:
        return bad_request(f"too many messages: this server accepts at most {MAX_MESSAGES}", "messages",
                           "too_many_messages")
    if kind == "too_long" and loc[:1] == ["messages"] and "content" in loc:
        return bad_request(f"too many content parts in one message: at most {MAX_CONTENT_PARTS}",
                           ".".join(loc[:3]), "too_many_content_parts")
    # Union members add their type names to the location (e.g. messages.0.content.str): drop them.
    loc = [x for x in loc if x not in ("str", "list[ContentPart]", "ImageURL", "list[str]", "int", "float")]
    param = ".".join(loc) or None
    ctx = first.get("ctx") or {}
    bounds = ", ".join(f"{k} {v}" for k, v in ctx.items() if k in ("ge", "gt", "le", "lt", "min_length",
                                                                   "max_length"))
    message = f"invalid request: {param + ': ' if param else ''}{first.get('msg', 'validation failed')}"
    return bad_request(message + (f" ({bounds})" if bounds else ""), param, "invalid_type"
                       if kind.endswith("_type") else "invalid_value")


# ---------------------------------------------------------------------------------- request -> model input
def unenforced_params(body: ChatCompletionBody) -> list[str]:
    """Accepted parameters this server cannot honour exactly; reported in the X-Gmai-Unenforced header.

    ``response_format`` json_object/json_schema: accepted so JSON-asking clients (the data engine's
    LLM generator) work, but decoding is not constrained: the caller must validate the JSON (the
    generator's verifier does). Non-zero penalties and logprobs are accepted and not applied."""
    out = []
    fmt = (body.model_extra or {}).get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        out.append("response_format")
    out += [name for name in ("frequency_penalty", "presence_penalty") if getattr(body, name)]
    if body.logprobs:
        out.append("logprobs")
    return out


def generation_config(body: ChatCompletionBody, config: ServeConfig) -> GenerationConfig:
    for name in UNSUPPORTED:
        if (body.model_extra or {}).get(name) not in (None, [], {}, "none"):
            raise bad_request(f"'{name}' is not supported by this server", name, "unsupported_parameter")
    max_tokens = body.max_completion_tokens or body.max_tokens or min(config.default_max_tokens,
                                                                      config.max_tokens_limit)
    if max_tokens > config.max_tokens_limit:
        raise bad_request(f"max_tokens {max_tokens} exceeds this server's limit of {config.max_tokens_limit}",
                          "max_tokens", "max_tokens_too_large")
    if body.n > config.max_n:
        raise bad_request(f"n {body.n} exceeds this server's limit of {config.max_n}", "n")
    if body.stream and body.n != 1:
        raise bad_request("stream=true supports n=1 only on this server", "n")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > config.max_stop:
        raise bad_request(f"at most {config.max_stop} stop sequences", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise bad_request(f"stop sequences are limited to {MAX_STOP_CHARS} characters", "stop")
    temperature = body.temperature or 0.0
    if temperature < MIN_SAMPLING_TEMPERATURE:
        temperature = 0.0  # greedy: the limit of sampling as temperature -> 0
    return GenerationConfig(max_new_tokens=max_tokens, temperature=temperature,
                            top_p=body.top_p if body.top_p is not None else 1.0, stop=[s for s in stop if s],
                            num_return_sequences=body.n, seed=body.seed)


@dataclass
class ChatPlan:
    """A request's turns (text only) and the images it names, checked but not yet decoded."""

    turns: list[dict[str, str]]
    image_refs: list[tuple[str, str]]  # (url, param)


def plan_chat(messages: list[Message], config: ServeConfig) -> ChatPlan:
    """OpenAI messages -> turns + image references. Every limit is checked here, before any image is
    decoded or any prompt rendered. Images keep their order and attach to the first user turn (the
    ChatRequest convention of gmai.infer); text parts of a message are joined."""
    refs = [(i, j, p) for i, m in enumerate(messages) if isinstance(m.content, list)
            for j, p in enumerate(m.content) if p.type == "image_url"]
    if len(refs) > config.max_images:
        raise bad_request(f"{len(refs)} images in one request; this server accepts at most "
                          f"{config.max_images}", "messages", "too_many_images")
    text_chars = sum(len(m.content) if isinstance(m.content, str) else
                     sum(len(p.text or "") for p in m.content or []) for m in messages)
    if text_chars > config.max_prompt_chars:
        raise bad_request(f"{text_chars} characters of text exceed this server's limit of "
                          f"{config.max_prompt_chars}", "messages", "context_length_exceeded")
    turns, images = [], []
    for i, message in enumerate(messages):
        role = ROLES.get(message.role)
        if role is None:  # the value is not echoed: it may be anything
            raise bad_request("unsupported role (use system, developer, user or assistant)", f"messages[{i}].role")
        if isinstance(message.content, str) or message.content is None:
            turns.append({"role": role, "content": message.content or ""})
            continue
        texts = []
        for j, part in enumerate(message.content):
            param = f"messages[{i}].content[{j}]"
            if part.type == "text":
                texts.append(part.text or "")
            elif part.type == "image_url":
                if role != "user":
                    raise bad_request("images are accepted in user messages only", param)
                url = part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url
                if not isinstance(url, str) or not url:
                    raise bad_request("image_url.url must be a non-empty string", f"{param}.image_url")
                images.append((url, f"{param}.image_url"))
            else:
                raise bad_request("unsupported content part type (use text or image_url)", f"{param}.type")
        turns.append({"role": role, "content": "\n".join(texts)})
    if not any(t["role"] == "user" for t in turns):
        raise bad_request("messages need at least one user message", "messages")
    return ChatPlan(turns, images)



# ---------------------------------------------------------------------------------- responses
def _completion_response(request_id: str, model: str, created: int, completions: list[Completion]) -> dict:
    prompt_tokens = completions[0].prompt_tokens if completions else 0
    completion_tokens = sum(c.completion_tokens for c in completions)
    return {
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                     "finish_reason": c.finish_reason} for i, c in enumerate(completions)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def _stream_events(pieces, request_id: str, model: str, created: int, include_usage: bool):
    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return _sse({"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    final = Completion("")
    try:
        async for item in pieces:
            if isinstance(item, Completion):
                final = item
            else:
                yield chunk({"content": item})
    except asyncio.TimeoutError:
        yield _sse(error_body("request ran past the server's time limit", type="timeout", code="timeout"))
        yield _sse("[DONE]")
        return
    except PromptTooLongError as err:
        yield _sse(error_body(str(err), param="messages", code="context_length_exceeded"))
        yield _sse("[DONE]")
        return
    except Exception as err:  # noqa: BLE001 - the stream has started: report in-band
        log.error("stream %s failed: %s", request_id, type(err).__name__)
        yield _sse(error_body("internal error while generating", type="server_error"))
        yield _sse("[DONE]")
        return
    yield chunk({}, final.finish_reason)
    if include_usage:
        yield _sse({"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": {"prompt_tokens": final.prompt_tokens,
                                             "completion_tokens": final.completion_tokens,
                                             "total_tokens": final.prompt_tokens + final.completion_tokens}})
    yield _sse("[DONE]")


def _json_response(status: int, payload: dict, headers: dict[str, str] | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse(payload, status_code=status, headers=headers)


# ---------------------------------------------------------------------------------- ASGI guard
class Guard:
    """Pure ASGI middleware, outermost: API key (all routes but /health), body size and read time,
    access log.

    The body is read here, bounded, before FastAPI sees it, so an oversized or slow upload is
    refused without buffering more than ``max_body_bytes``. /health is open; the scope's
    ``state["authorized"]`` tells it whether to add counters."""

    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config
        self.key = config.api_key.encode() if config.api_key else None
        # All request bodies held at once (being read, or being served) stay under this budget.
        self.body_budget = max(config.body_budget_bytes, config.max_body_bytes)
        self.bodies_held = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [0]

        async def logged_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._serve(scope, receive, logged_send)
        finally:
            log.info("%s %s %d %.1f ms", scope.get("method"), scope.get("path"), status[0] or 499,
                     1000 * (time.perf_counter() - start))

    async def _serve(self, scope, receive, send):
        reserved = [0]
        try:
            try:
                headers = dict(scope.get("headers") or [])
                authorized = self._authorized(headers)
                scope.setdefault("state", {})["authorized"] = authorized
                if not authorized and scope.get("path") != "/health":
                    raise APIError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                                   code="invalid_api_key")
                body = await self._read_body(headers, receive, reserved)
            except APIError as err:  # the body may be left unread: this connection cannot be reused
                return await _send_error(send, err, close=True)
            delivered = False

            async def replay():
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: wait for the disconnect (cancellation uses it)

            return await self.app(scope, replay, send)
        finally:
            self.bodies_held -= reserved[0]

    def _reserve(self, nbytes: int, reserved: list[int]) -> None:
        if self.bodies_held + nbytes > self.body_budget:
            raise overloaded("server is receiving too much data at once; retry shortly")
        self.bodies_held += nbytes
        reserved[0] += nbytes

    def _authorized(self, headers) -> bool:
        if self.key is None:
            return True
        given = headers.get(b"authorization", b"")
        token = given[7:].strip() if given[:7].lower() == b"bearer " else b""
        return bool(token) and hmac.compare_digest(token, self.key)

    async def _read_body(self, headers, receive, reserved: list[int]) -> bytes:
        limit = self.config.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise bad_request("invalid Content-Length header")
            if int(declared) > limit:
                raise APIError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes",
                               code="request_too_large")
        chunks, size = [], 0
        deadline = time.monotonic() + self.config.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise APIError(408, "request body not received in time", code="body_timeout") from None
            if message["type"] == "http.disconnect":
                raise APIError(400, "client disconnected")
            size += len(message.get("body", b""))
            if size > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
            self._reserve(len(message.get("body", b"")), reserved)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _send_error(send, err: APIError, close: bool = False) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(b"connection", b"close")] if close else []
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _until_disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# ---------------------------------------------------------------------------------- the service
class ChatService:
    """One chat completion from body bytes to response: parse (inline, or in a worker for large
    bodies), plan (limits), decode images (worker pool; text-only requests skip it), prepare
    (render + tokenize, in a thread), then generate in the batcher. Owns the batcher and pools."""

    def __init__(self, backend: Any, config: ServeConfig):
        import anyio

        self.backend, self.config = backend, config
        self.batcher = DynamicBatcher(backend, max_batch=config.max_batch, wait_ms=config.batch_wait_ms,
                                      max_queue=config.max_queue)
        preload = ("gmai.serve.images", "gmai.data.imaging")
        self.decoders = WorkerPool("image decoding", config.decode_workers, timeout_s=config.decode_timeout_s,
                                   memory_mb=config.decode_memory_mb, max_waiting=config.max_queue,
                                   preload=preload, nice=5, wall_timeout_s=config.decode_wall_timeout_s)
        self.light_decoders = WorkerPool("image decoding", config.light_decode_workers,
                                         timeout_s=config.decode_timeout_s, memory_mb=config.decode_memory_mb,
                                         max_waiting=config.max_queue, preload=preload,
                                         wall_timeout_s=config.decode_wall_timeout_s)
        self.parsers = WorkerPool("request validation", 1, timeout_s=config.body_timeout_s, memory_mb=0,
                                  max_waiting=config.max_queue, preload=("gmai.serve.api",))
        # Rendering + tokenizing: text-only requests and image requests have their own threads.
        self.text_prep, self.image_prep = anyio.CapacityLimiter(2), anyio.CapacityLimiter(2)
        self.can_prepare = callable(getattr(backend, "prepare", None))
        # A proven lower bound on prompt tokens from UTF-8 bytes (gmai.serve.tokens), checked before
        # any image is decoded or the prompt rendered; None when the tokenizer's structure has none.
        self.context_length = getattr(backend, "context_length", None)
        self.bytes_per_token = bytes_per_token_bound(getattr(backend, "tokenizer", None))
        self.in_flight = 0
        self.image_requests = 0  # in flight with images
        self._trimming: asyncio.Future | None = None

    def start(self) -> None:
        map_large_allocations()
        gc.freeze()  # the model and libraries, loaded by now, are never scanned by later collections
        self.batcher.start()
        for pool in self.pools():
            pool.start()

    def stop(self) -> None:
        gc.unfreeze()
        self.batcher.stop()
        for pool in self.pools():
            pool.shutdown()

    def pools(self) -> list[WorkerPool]:
        return [self.light_decoders, self.decoders, self.parsers]

    def counters(self) -> dict:
        return {"queue_depth": self.batcher.queue_depth, "in_flight": self.in_flight,
                "generating": self.batcher.generating, "generate_calls": self.batcher.batches_run,
                "requests_generated": self.batcher.requests_run, "decoder_restarts": self.decoders.restarts + self.light_decoders.restarts}

    async def parse(self, raw: bytes) -> ChatCompletionBody:
        if len(raw) <= self.config.inline_parse_bytes:
            return parse_body(raw, self.config)
        return await self.parsers.run(parse_body, raw, self.config)

    async def chat_request(self, body: ChatCompletionBody, gen_config: GenerationConfig):
        """The model input and (when the backend can) its prepared encoding."""
        import anyio

        plan = plan_chat(body.messages, self.config)
        self.check_prompt_bound(plan, gen_config)
        images = []
        if plan.image_refs:
            images = await self.decode(plan.image_refs)
        chat = ChatRequest(messages=plan.turns, images=images)
        if not self.can_prepare:
            return chat, None
        limiter = self.image_prep if images else self.text_prep
        try:
            return chat, await anyio.to_thread.run_sync(self.backend.prepare, chat, gen_config, limiter=limiter)
        except PromptTooLongError as err:
            raise bad_request(str(err), "messages", "context_length_exceeded") from None
        except Exception as err:  # noqa: BLE001 - this request's input, alone, broke the processor
            log.warning("prepare failed: %s", type(err).__name__)
            raise bad_request(f"the model's processor could not encode this request ({type(err).__name__})",
                              "messages", "unprocessable_input") from None

    def check_prompt_bound(self, plan: ChatPlan, gen_config: GenerationConfig) -> None:
        """Refuse a prompt that cannot fit the context, from its bytes alone (before rendering).
        Only user turns count: every chat template renders them whole (some drop parts of others)."""
        if not (self.context_length and self.bytes_per_token):
            return
        text_bytes = sum(len(t["content"].encode("utf-8")) for t in plan.turns if t["role"] == "user")
        fewest = min_tokens(text_bytes, self.bytes_per_token)
        if fewest + gen_config.max_new_tokens > self.context_length:
            raise bad_request(f"prompt of at least {fewest} tokens ({text_bytes} bytes of user text; a token of this "
                              f"model covers at most {self.bytes_per_token} bytes) + max_tokens "
                              f"{gen_config.max_new_tokens} exceeds the model's context of {self.context_length} "
                              f"tokens", "messages", "context_length_exceeded")

    async def decode(self, refs: list[tuple[str, str]]) -> list:
        """Price the images from their headers (refusing bombs and over-budget requests at once),
        then decode them in the lane their price picks, within a budget scaled to that price."""
        limits = self.config.image_limits()
        units = decode_cost(refs, limits)
        pool = self.light_decoders if units <= self.config.light_decode_units else self.decoders
        return await pool.run(decode_images, refs, limits, timeout_s=self.config.decode_budget_s(units))

    async def complete(self, raw: bytes, receive):
        """Non-streaming and streaming completions. Non-streaming work is abandoned (its batch slot
        freed, generation stopped at the next token) as soon as the client disconnects."""
        body = await self.parse(raw)
        if body.model != self.config.model_name:  # the requested name is not echoed: it may be huge
            raise APIError(404, f"model not found; this server serves {self.config.model_name!r}",
                           param="model", code="model_not_found")
        gen_config = generation_config(body, self.config)
        if self.in_flight >= self.config.max_queue:
            raise overloaded()
        self.in_flight += 1  # from decoding to the end of generation (streams: until queued)
        has_images = any(isinstance(m.content, list) and any(p.type == "image_url" for p in m.content)
                         for m in body.messages)
        self.image_requests += has_images
        try:
            if body.stream:
                return await self._stream(body, gen_config)
            work = asyncio.ensure_future(self._complete(body, gen_config))
            gone = asyncio.ensure_future(_until_disconnected(receive))
            try:
                await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
            if not work.done():
                work.cancel()  # the batcher marks the job cancelled: skipped, or stopped at the next token
                raise ClientGone()
            return work.result()
        finally:
            self.in_flight -= 1
            self.image_requests -= has_images
            if has_images and not self.image_requests:
                self._release_memory()

    def _release_memory(self) -> None:
        """After the last image request in flight: collect the requests' reference cycles, then hand
        the heap their decoded images and encodings used back to the system (glibc keeps freed
        memory in its per-thread arenas otherwise, and RSS stays at the burst's peak). The trim runs
        in a thread (ctypes releases the GIL)."""
        if self._trimming is None or self._trimming.done():
            gc.collect()  # requests leave reference cycles (futures, frames) holding images; cheap after freeze()
            self._trimming = asyncio.get_running_loop().run_in_executor(None, release_free_memory)

    async def _complete(self, body: ChatCompletionBody, gen_config: GenerationConfig):
        deadline = time.monotonic() + self.config.request_timeout_s
        chat, prepared = await self.chat_request(body, gen_config)
        remaining = max(0.001, deadline - time.monotonic())
        completions = await self._submit(lambda: self.batcher.complete(chat, gen_config, remaining,
                                                                       prepared=prepared))
        request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        return _json_response(200, _completion_response(request_id, self.config.model_name, created, completions),
                              self._unenforced_header(body))

    async def _stream(self, body: ChatCompletionBody, gen_config: GenerationConfig):
        from starlette.responses import StreamingResponse

        deadline = time.monotonic() + self.config.request_timeout_s
        chat, prepared = await self.chat_request(body, gen_config)
        pieces = await self._submit(lambda: self.batcher.stream(chat, gen_config, deadline, prepared=prepared))
        request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        events = _stream_events(pieces, request_id, self.config.model_name, created, include_usage)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                          **self._unenforced_header(body)})

    @staticmethod
    def _unenforced_header(body: ChatCompletionBody) -> dict[str, str]:
        unenforced = unenforced_params(body)
        return {"X-Gmai-Unenforced": ",".join(unenforced)} if unenforced else {}

    async def _submit(self, call):
        try:
            return await call()
        except QueueFullError as err:
            raise overloaded(str(err)) from None
        except asyncio.TimeoutError:
            raise APIError(504, f"request ran past the server's time limit of {self.config.request_timeout_s:g} s",
                           type="timeout", code="timeout") from None
        except PromptTooLongError as err:
            raise bad_request(str(err), "messages", "context_length_exceeded") from None


# ---------------------------------------------------------------------------------- the app
def create_app(backend: Any, config: ServeConfig):
    """An ASGI app serving ``backend`` (anything with gmai.infer's ``complete`` and ``stream``;
    ``prepare`` is used when present). ``.fastapi`` is the inner FastAPI app, ``.service`` the
    :class:`ChatService`."""
    from fastapi import FastAPI
    from PIL import Image

    # PIL's own decompression-bomb guard at our limit too (it errors at 2x, we check at 1x first).
    Image.MAX_IMAGE_PIXELS = config.max_image_pixels
    service = ChatService(backend, config)

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        yield
        service.stop()

    app = FastAPI(title="gmai OpenAI-compatible API", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher, app.state.service = service.batcher, service
    _add_error_handlers(app)
    _add_routes(app, service, config)
    guarded = Guard(app, config)
    guarded.fastapi, guarded.service = app, service  # tests and embedding code reach the batcher here
    return guarded


def _add_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.responses import Response

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return _json_response(err.status, err.body(), err.headers)

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, err: ClientGone):
        return Response(status_code=499)  # nobody reads it; logged as 499 (nginx's "client closed")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        return _json_response(400, error_body("invalid request", code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return _json_response(err.status_code, error_body(str(err.detail), code=code))

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception):
        log.error("%s %s failed: %s", request.method, request.url.path, type(err).__name__)
        return _json_response(500, error_body(f"internal server error ({type(err).__name__})", type="server_error"))


def _add_routes(app, service: ChatService, config: ServeConfig) -> None:
    def authorized(request: Request) -> bool:
        return bool(getattr(request.state, "authorized", False))

    @app.get("/health")
    async def health(request: Request):
        # Without the key: only "ok". Traffic counters are for key holders (/metrics too).
        return {"status": "ok", **(service.counters() if authorized(request) else {})}

    @app.get("/metrics")
    async def metrics():
        return service.counters()  # the Guard has checked the key

    def model_card() -> dict:
        return {"id": config.model_name, "object": "model", "created": config.created, "owned_by": "gmai"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id != config.model_name:
            raise APIError(404, f"model not found; this server serves {config.model_name!r}",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await service.complete(await request.body(), request.receive)


# ---------------------------------------------------------------------------------- running it
def uvicorn_config(app, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"):
    """uvicorn settings with every connection-level limit: request-head deadline, per-address and
    total connection bounds (gmai.serve.connections), keep-alive timeout, head size (h11's 16 KiB).
    uvicorn's own concurrency cap is off: idle sockets must not count against working requests
    (the in-flight bound is the app's ``max_queue``)."""
    import uvicorn

    from gmai.serve.connections import ConnectionLimits, guarded_protocol

    limits = ConnectionLimits(head_timeout_s=config.head_timeout_s, per_address=config.max_connections_per_address,
                              total=config.max_connections)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          http=guarded_protocol(limits), timeout_keep_alive=config.keep_alive_timeout_s,
                          h11_max_incomplete_event_size=16 * 1024, lifespan="on")


def run_server(checkpoint: str, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
               device: str | None = None, log_level: str = "info", torch_threads: int = 0) -> None:
    import uvicorn

    from gmai.infer import load_backend

    if checkpoint.startswith(("http://", "https://")):
        raise SystemExit("gmai serve serves a local checkpoint folder, not a URL")
    if torch_threads > 0:
        import torch

        torch.set_num_threads(torch_threads)
    backend = load_backend(checkpoint, device=device)
    if not hasattr(backend, "complete"):
        raise SystemExit(f"backend {type(backend).__name__} cannot be served (it has no complete())")
    app = create_app(backend, config)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.Server(uvicorn_config(app, config, host, port, log_level)).run()
