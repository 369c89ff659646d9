"""A real uvicorn server in a thread, with the settings `gmai serve` uses (gmai.serve.api.uvicorn_config),
on a free loopback port: for tests that need real sockets (timeouts, connection bounds, disconnects)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

from gmai.serve.api import ServeConfig, create_app, uvicorn_config
from gmai.serve.process import free_port


@contextmanager
def live_server(backend, config: ServeConfig):
    import uvicorn

    app = create_app(backend, config)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, config, "127.0.0.1", port, "warning"))
    thread = threading.Thread(target=server.run, name="live-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", port, app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def raw_request(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload`` on a fresh socket, return everything read until the server closes or the timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (socket.timeout, ConnectionResetError):
        pass
    return b"".join(chunks)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
