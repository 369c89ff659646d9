"""Connection-level limits on a real uvicorn server (loopback sockets, short timeouts): idle sockets,
per-address bound, request-head deadline (slow headers), keep-alive and body timeouts."""

import socket
import threading
import time

import httpx
from live import closed_by_server, live_server, raw_request, read_until_closed
from serve_fakes import FakeBackend

from gmai.serve.api import ServeConfig

KEY = "conn-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _config(**overrides) -> ServeConfig:
    return ServeConfig(**{"model_name": "fake", "api_key": KEY, "batch_wait_ms": 1, "decode_workers": 1,
                          **overrides})


def _open(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def test_valid_requests_and_health_are_served_while_300_idle_sockets_are_held():
    with live_server(FakeBackend(), _config(head_timeout_s=30)) as (url, port, _):
        idle = _open(port, 300)
        try:
            time.sleep(0.3)
            with httpx.Client(timeout=10) as client:
                for _ in range(3):
                    start = time.monotonic()
                    assert client.get(url + "/health").status_code == 200
                    assert client.post(url + "/v1/chat/completions", headers=AUTH, json=BODY).status_code == 200
                    assert time.monotonic() - start < 2.0
        finally:
            for sock in idle:
                sock.close()


def test_a_new_connection_over_the_per_address_bound_closes_the_oldest_idle_one():
    with live_server(FakeBackend(), _config(max_connections_per_address=8, head_timeout_s=30)) as (url, port, _):
        idle = _open(port, 8)
        try:
            time.sleep(0.2)
            newest = socket.create_connection(("127.0.0.1", port), timeout=5)
            assert closed_by_server(idle[0], within=2.0)  # the oldest made room
            assert not closed_by_server(idle[-1], within=0.3)
            newest.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(newest, 5).startswith(b"HTTP/1.1 200")
            newest.close()
        finally:
            for sock in idle:
                sock.close()


def test_when_every_connection_of_an_address_is_busy_a_new_one_gets_503():
    config = _config(max_connections_per_address=3, head_timeout_s=30)
    with live_server(FakeBackend(delay=2.0), config) as (url, port, app):
        def slow_request():
            with httpx.Client(timeout=20) as client:
                client.post(url + "/v1/chat/completions", headers=AUTH, json=BODY)

        busy = [threading.Thread(target=slow_request) for _ in range(3)]
        for t in busy:
            t.start()
        deadline = time.monotonic() + 10  # until all 3 are being served (worker start-up can slow them)
        while app.service.in_flight < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.service.in_flight == 3
        reply = raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
        assert reply.startswith(b"HTTP/1.1 503") and b"too_many_connections" in reply
        for t in busy:
            t.join()


def test_slow_headers_are_closed_at_the_head_deadline_even_while_bytes_trickle_in():
    assert ServeConfig().head_timeout_s <= 30
    with live_server(FakeBackend(), _config(head_timeout_s=1.0)) as (url, port, _):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        start, closed = time.monotonic(), False
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        for byte in b"X-Slow: " + b"a" * 60:  # one byte per 100 ms: 6.8 s in all
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_by_server(sock, within=0.1):
                closed = True
                break
        elapsed = time.monotonic() - start
        sock.close()
        assert closed and 0.9 < elapsed < 2.5, elapsed
        # and a socket that sends nothing at all
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert closed_by_server(silent, within=2.5)
        silent.close()


def test_idle_keep_alive_connections_are_closed():
    with live_server(FakeBackend(), _config(keep_alive_timeout_s=1.0, head_timeout_s=30)) as (url, port, _):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert closed_by_server(sock, within=3.0) and time.monotonic() - start < 2.5
        sock.close()


def test_a_body_that_stops_arriving_is_408():
    with live_server(FakeBackend(), _config(body_timeout_s=1.0, head_timeout_s=30)) as (url, port, _):
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
        start = time.monotonic()
        reply = raw_request(port, head + b'{"model": ', timeout=5)
        assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 3.0
