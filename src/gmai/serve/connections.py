"""Connection-level limits uvicorn lacks, as a subclass of its h11 protocol.

uvicorn bounds the idle time between requests on a keep-alive connection (``timeout_keep_alive``)
and the size of a request head (h11's ``max_incomplete_event_size``), but not the time a client may
take to send the head, nor how many connections one client address may hold. Without these, a few
hundred idle sockets or a client trickling header bytes exhaust the server. This protocol adds:

- a deadline for each request head, from the connection's start (or the first byte of a
  keep-alive request) to its last header line; past it the connection is closed;
- at most ``per_address`` connections per client address and ``total`` in all: a new connection
  over either bound closes the oldest *idle* connection (no request being served) of that address
  (or of any, for the total), so idle or slow clients make room for working ones; only when every
  connection is busy is the new one answered 503 and closed.

The body's own deadline starts after the head (the API's Guard reads it, bounded).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

_REFUSED_BODY = (b'{"error": {"message": "too many connections; retry shortly", "type": "server_overloaded", '
                 b'"param": null, "code": "too_many_connections"}}')
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"retry-after: 1\r\ncontent-length: %d\r\n\r\n" % len(_REFUSED_BODY)) + _REFUSED_BODY


@dataclass(frozen=True)
class ConnectionLimits:
    head_timeout_s: float = 10.0  # whole request head (request line + headers)
    per_address: int = 128
    total: int = 900  # below the usual 1024 open-file limit


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """An H11Protocol class for ``uvicorn.Config(http=...)`` enforcing ``limits`` (state per server)."""
    by_address: dict[str, dict[H11Protocol, None]] = {}  # insertion order = age
    everyone: dict[H11Protocol, None] = {}

    class GuardedH11Protocol(H11Protocol):
        counters = {"head_timeouts": 0, "evicted_idle": 0, "refused_busy": 0}

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            self._address = self.client[0] if self.client else ""
            peers = by_address.setdefault(self._address, {})
            if (len(peers) >= limits.per_address and not _evict_idle(peers)) or \
                    (len(everyone) >= limits.total and not _evict_idle(everyone)):
                self.counters["refused_busy"] += 1
                transport.write(_REFUSED)
                transport.close()
                return
            peers[self] = None
            everyone[self] = None
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.serving():
                self._disarm_head_timer()  # the head is complete: the body has its own deadline
            elif self._head_timer is None and not self.transport.is_closing():
                self._arm_head_timer()  # the first bytes of a keep-alive connection's next request

        def serving(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(limits.head_timeout_s, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.serving() and not self.transport.is_closing():
                self.counters["head_timeouts"] += 1
                self.transport.close()

        def _forget(self) -> None:
            self._disarm_head_timer()
            everyone.pop(self, None)
            peers = by_address.get(self._address)
            if peers is not None:
                peers.pop(self, None)
                if not peers:
                    by_address.pop(self._address, None)

    def _evict_idle(group: dict[H11Protocol, None]) -> bool:
        for conn in list(group):
            if not conn.serving():
                conn.counters["evicted_idle"] += 1
                conn._forget()
                conn.transport.close()
                return True
        return False

    return GuardedH11Protocol
