"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Clients (the ``openai`` package included) read this shape to raise typed exceptions, so every
refusal the server makes, from auth to a decompression bomb, goes through :class:`APIError`.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def __reduce__(self):  # crosses process boundaries (decoding workers) intact
        return _rebuild, (self.status, self.message, self.type, self.param, self.code, self.headers)

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _rebuild(status, message, type, param, code, headers) -> APIError:
    return APIError(status, message, type=type, param=param, code=code, headers=headers)


def overloaded(message: str = "server is at capacity; retry shortly") -> APIError:
    return APIError(503, message, type="server_overloaded", code="overloaded", headers={"Retry-After": "1"})
