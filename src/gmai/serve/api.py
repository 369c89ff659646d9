"""The OpenAI-compatible API: ``/v1/models``, ``/v1/chat/completions`` (streaming or not), ``/health``.

Serve any local checkpoint that :func:`gmai.infer.load_backend` loads (gmai checkpoints and other
Hugging Face image-text-to-text folders)::

    app = create_app(backend, ServeConfig(model_name="tiny", api_key="secret"))

Every request is bounded: body size and read time, number of images, pixels per image (checked
from the header, before decoding), prompt length, ``max_tokens``, ``n``, time in the server, and
the number of requests in flight. Every refusal is a 4xx in OpenAI's error shape (503 when the
server is full, 504 when a request runs past its time) and the server stays up. Logs carry the
method, path, status and timing, never message or image content.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gmai.infer.types import ChatRequest, Completion, GenerationConfig, PromptTooLongError
from gmai.serve.batching import DynamicBatcher, QueueFullError
from gmai.serve.errors import APIError, bad_request, error_body
from gmai.serve.images import ImageLimits, load_image_url

log = logging.getLogger("gmai.serve")

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logit_bias", "audio", "prediction")


@dataclass
class ServeConfig:
    model_name: str = "gmai"
    api_key: str | None = None  # None: no auth (only allowed on a loopback host, see cli)
    allowed_root: Path | None = None  # local image paths are refused unless set
    max_body_bytes: int = 20 * 1024 * 1024
    body_timeout_s: float = 30.0  # a client must finish sending its body within this
    max_images: int = 8
    max_image_pixels: int = 25_000_000
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_side: int = 1344  # decoded images are shrunk to this longest side (0: keep full size)
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
                           max_side=self.max_image_side)


# ---------------------------------------------------------------------------------- request schema
class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None


class ChatCompletionBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # other OpenAI fields: ignored unless in UNSUPPORTED
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None


# ---------------------------------------------------------------------------------- request -> model input
def unenforced_params(body: ChatCompletionBody) -> list[str]:
    """Accepted parameters this server cannot honour exactly; reported in the X-Gmai-Unenforced header.

    ``response_format`` json_object/json_schema: accepted so JSON-asking clients (the data engine's
    LLM generator) work, but decoding is not constrained: the caller must validate the JSON (the
    generator's verifier does)."""
    fmt = (body.model_extra or {}).get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        return ["response_format"]
    return []


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
    return GenerationConfig(max_new_tokens=max_tokens, temperature=body.temperature or 0.0,
                            top_p=body.top_p if body.top_p is not None else 1.0, stop=[s for s in stop if s],
                            num_return_sequences=body.n, seed=body.seed)


def _count_images(messages: list[Message]) -> int:
    return sum(1 for m in messages if isinstance(m.content, list) for p in m.content if p.type == "image_url")


def build_chat_request(messages: list[Message], config: ServeConfig) -> ChatRequest:
    """OpenAI messages -> a ChatRequest. Limits are checked before any image is decoded.

    Images keep their order and attach to the first user turn (the ChatRequest convention of
    gmai.infer); text parts of a message are joined."""
    images_in_request = _count_images(messages)
    if images_in_request > config.max_images:
        raise bad_request(f"{images_in_request} images in one request; this server accepts at most "
                          f"{config.max_images}", "messages", "too_many_images")
    text_chars = sum(len(m.content) if isinstance(m.content, str) else
                     sum(len(p.text or "") for p in m.content or []) for m in messages)
    if text_chars > config.max_prompt_chars:
        raise bad_request(f"{text_chars} characters of text exceed this server's limit of "
                          f"{config.max_prompt_chars}", "messages", "context_length_exceeded")
    limits, turns, images = config.image_limits(), [], []
    for i, message in enumerate(messages):
        role = ROLES.get(message.role)
        if role is None:
            raise bad_request(f"role {message.role!r} is not supported (use system, user or assistant)",
                              f"messages[{i}].role")
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
                images.append(load_image_url(url, limits, f"{param}.image_url"))
            else:
                raise bad_request(f"content part type {part.type!r} is not supported (text, image_url)", param)
        turns.append({"role": role, "content": "\n".join(texts)})
    if not any(t["role"] == "user" for t in turns):
        raise bad_request("messages need at least one user message", "messages")
    return ChatRequest(messages=turns, images=images)


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


# ---------------------------------------------------------------------------------- ASGI guard
class Guard:
    """Pure ASGI middleware, outermost: API key (all routes but /health), body size and read time.

    The body is read here, bounded, before FastAPI sees it, so an oversized or slow upload is
    refused without buffering more than ``max_body_bytes``."""

    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config
        self.key = config.api_key.encode() if config.api_key else None
        # All request bodies held at once (being read, or being served) stay under this budget.
        self.body_budget = max(config.body_budget_bytes, config.max_body_bytes)
        self.bodies_held = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        reserved = [0]
        try:
            try:
                headers = dict(scope.get("headers") or [])
                self._check_key(scope, headers)
                body = await self._read_body(headers, receive, reserved)
            except APIError as err:
                return await _send_error(send, err)
            delivered = False

            async def replay():
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: wait for the disconnect (streaming uses it)

            return await self.app(scope, replay, send)
        finally:
            self.bodies_held -= reserved[0]

    def _reserve(self, nbytes: int, reserved: list[int]) -> None:
        if self.bodies_held + nbytes > self.body_budget:
            raise APIError(503, "server is receiving too much data at once; retry shortly",
                           type="server_overloaded", code="overloaded", headers={"Retry-After": "1"})
        self.bodies_held += nbytes
        reserved[0] += nbytes

    def _check_key(self, scope, headers) -> None:
        if self.key is None or scope.get("path") == "/health":
            return
        given = headers.get(b"authorization", b"")
        token = given[7:].strip() if given[:7].lower() == b"bearer " else b""
        if not token or not hmac.compare_digest(token, self.key):
            raise APIError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                           param=None, code="invalid_api_key")

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


async def _send_error(send, err: APIError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------- the app
def create_app(backend: Any, config: ServeConfig):
    """A FastAPI app serving ``backend`` (anything with gmai.infer's ``complete`` and ``stream``)."""
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from PIL import Image
    from starlette.exceptions import HTTPException as StarletteHTTPException

    # PIL's own decompression-bomb guard at our limit too (it errors at 2x, we check at 1x first).
    Image.MAX_IMAGE_PIXELS = config.max_image_pixels
    batcher = DynamicBatcher(backend, max_batch=config.max_batch, wait_ms=config.batch_wait_ms,
                             max_queue=config.max_queue)
    decode_slots = anyio.CapacityLimiter(2)  # image decoding is CPU and memory heavy: two at a time
    state = {"in_flight": 0}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="gmai OpenAI-compatible API", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher

    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        errors = err.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("request body is not valid JSON", code="invalid_json"), status_code=400)
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        # never echo the input back: it may be megabytes, or a patient's image
        message = f"invalid request: {param + ': ' if param else ''}{first.get('msg', 'validation failed')}"
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return JSONResponse(error_body(str(err.detail), code=code), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception):
        log.error("%s %s failed: %s", request.method, request.url.path, type(err).__name__)
        return JSONResponse(error_body(f"internal server error ({type(err).__name__})", type="server_error"),
                            status_code=500)

    @app.middleware("http")
    async def _access_log(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        log.info("%s %s %d %.1f ms", request.method, request.url.path, response.status_code,
                 1000 * (time.perf_counter() - start))
        return response

    @app.get("/health")
    async def health():
        return {"status": "ok", "queue_depth": batcher.queue_depth, "in_flight": state["in_flight"],
                "generate_calls": batcher.batches_run, "requests_generated": batcher.requests_run}

    def model_card() -> dict:
        return {"id": config.model_name, "object": "model", "created": config.created, "owned_by": "gmai"}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id != config.model_name:
            raise APIError(404, f"model {model_id!r} not found; this server serves {config.model_name!r}",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionBody):
        if body.model != config.model_name:
            raise APIError(404, f"model {body.model!r} not found; this server serves {config.model_name!r}",
                           param="model", code="model_not_found")
        gen_config = generation_config(body, config)
        unenforced = unenforced_params(body)
        extra_headers = {"X-Gmai-Unenforced": ",".join(unenforced)} if unenforced else {}
        if state["in_flight"] >= config.max_queue:
            raise APIError(503, "server is at capacity; retry shortly", type="server_overloaded",
                           code="overloaded", headers={"Retry-After": "1"})
        # Counted from decoding to the end of generation (streams: until queued; the batcher's
        # bounded queue and the deadline bound them after that).
        state["in_flight"] += 1
        try:
            deadline = time.monotonic() + config.request_timeout_s
            chat = await anyio.to_thread.run_sync(build_chat_request, body.messages, config, limiter=decode_slots)
            request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            if body.stream:
                pieces = await _submit(lambda: batcher.stream(chat, gen_config, deadline))
                include_usage = bool((body.stream_options or {}).get("include_usage"))
                events = _stream_events(pieces, request_id, config.model_name, created, include_usage)
                return StreamingResponse(events, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                                  **extra_headers})
            remaining = max(0.001, deadline - time.monotonic())
            completions = await _submit(lambda: batcher.complete(chat, gen_config, remaining))
            return JSONResponse(_completion_response(request_id, config.model_name, created, completions),
                                headers=extra_headers)
        finally:
            state["in_flight"] -= 1

    async def _submit(call):
        try:
            return await call()
        except QueueFullError as err:
            raise APIError(503, str(err), type="server_overloaded", code="overloaded",
                           headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise APIError(504, f"request ran past the server's time limit of {config.request_timeout_s:g} s",
                           type="timeout", code="timeout") from None
        except PromptTooLongError as err:
            raise bad_request(str(err), "messages", "context_length_exceeded") from None

    guarded = Guard(app, config)
    guarded.fastapi = app  # tests and embedding code reach app.state.batcher through this
    return guarded


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
    # uvicorn's own connection cap is a backstop behind the in-flight limit (it answers 503 too).
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                limit_concurrency=4 * config.max_queue + 16, timeout_keep_alive=5)
