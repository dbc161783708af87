"""Health probes answered by the HTTP protocol itself, the moment their headers are parsed.

Under load the event loop runs one callback after another: a probe that goes through the ASGI app waits for
a task of its own, scheduled behind every request the loop already holds (64 clients' worth of JSON parsing
and batching). A liveness checker then sees the server as slow when it is only busy. GET /v2/health/live and
/v2/health/ready need no body, no auth and no model, so the protocol answers them in the same callback that
read them, before any queued work; everything else (HEAD included) goes through the app unchanged.

This subclasses uvicorn's httptools protocol at the one point where it hands a parsed request to the app
(``_start_asgi_task``). Where that protocol or method is missing (another uvicorn, no httptools), the
server falls back to uvicorn's own protocol and the app answers the probes, as before.
"""

from __future__ import annotations

import json
import logging
import time

from runtime.serving.app import ServerState, probe

log = logging.getLogger("resnet_edge.serve")


def http_protocol(state: ServerState, lane: bool = True):
    """The ``http`` setting for uvicorn.Config: a protocol class with the request-head bounds and (``lane``) the
    probe fast lane, or "auto"."""
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:
        return "auto"
    if not all(callable(getattr(HttpToolsProtocol, name, None))
               for name in ("_start_asgi_task", "_unset_keepalive_if_required", "on_response_complete")):
        log.warning("this uvicorn's httptools protocol is not the one expected: health probes go through the app")
        return "auto"

    sweeper = _HeadSweeper(state)

    class ProbeFastLane(HttpToolsProtocol):
        # -- bounds on the request head: uvicorn's httptools protocol has no setting for them -----------------
        _head_bytes = 0  # bytes of the request head received so far (line and headers)
        _line_bytes = 0  # bytes of the request line so far
        _in_head = True  # from the end of a message (or the connection's opening) to the end of the next headers
        _head_since: float | None = None  # loop time a head began (or the connection opened); None: no head pending

        def connection_made(self, transport) -> None:  # asyncio.Protocol's interface
            super().connection_made(transport)
            state.connections = len(self.connections)
            self._head_since = self.loop.time()  # the first request head must arrive whole within head_timeout_s
            sweeper.arm(self.loop, self.connections)

        def connection_lost(self, exc) -> None:
            self._head_since = None
            super().connection_lost(exc)
            state.connections = len(self.connections)

        def data_received(self, data: bytes) -> None:
            if self._in_head:  # checked before the parser sees the bytes (it grows a long value at quadratic cost)
                if self._line_bytes >= 0:  # still inside the request line
                    end = data.find(b"\n")
                    self._line_bytes = -1 if end >= 0 and self._line_bytes + end <= state.max_url_bytes \
                        else self._line_bytes + (len(data) if end < 0 else end)
                    if self._line_bytes > state.max_url_bytes:
                        return self._refuse(414, f"The request line is over {state.max_url_bytes:,} bytes.")
                end = data.find(b"\r\n\r\n")
                self._head_bytes += len(data) if end < 0 else end + 4
                if self._head_bytes > state.max_head_bytes:
                    return self._refuse(431, f"The request head is over {state.max_head_bytes:,} bytes.")
            super().data_received(data)

        def on_headers_complete(self) -> None:  # httptools' parser callback
            self._in_head = False
            self._head_since = None
            super().on_headers_complete()

        def on_message_complete(self) -> None:  # httptools' parser callback: the next bytes are the next head
            super().on_message_complete()
            self._in_head, self._head_bytes, self._line_bytes = True, 0, 0

        def _head_expired(self) -> None:
            self._head_since = None
            if self._in_head and not self.transport.is_closing():
                self._refuse(408, f"The request head did not arrive within {state.head_timeout_s:g} s.")

        def _refuse(self, status: int, sentence: str) -> None:
            """One JSON sentence and the connection closed: the parser never sees more of this head."""
            body = json.dumps({"error": sentence}).encode()
            reason = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}[status]
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
            self.transport.close()
            self._in_head = False
            state.metrics.request("head", status, 0.0)

        # -- the probe fast lane -----------------------------------------------------------------------------
        def on_message_begin(self) -> None:
            # A probe answered here arms the keep-alive timer, as any finished response does; a request read
            # from the same packet behind it must not run under that timer (uvicorn starts pipelined requests
            # only from a finished response, which arms no timer then).
            self._unset_keepalive_if_required()
            super().on_message_begin()
            if self._head_since is None:  # a keep-alive connection's next head: the deadline from its first byte
                self._head_since = self.loop.time()

        _answering = False  # inside the loop below: a pipelined request it starts is handed back to it
        _handed = None

        def _start_asgi_task(self, cycle, app) -> None:
            # Answering a probe ends in on_response_complete, which starts the next pipelined request by calling
            # this method again: handled in a loop rather than by recursion, any number of pipelined probes
            # (one packet of 10,000) cost no stack.
            if self._answering:
                self._handed = (cycle, app)
                return
            self._answering = True
            try:
                while True:
                    scope = cycle.scope
                    answer = probe(state, scope["path"]) if lane and scope["method"] == "GET" else None
                    if answer is None:
                        super()._start_asgi_task(cycle, app)
                        return
                    self._answer(cycle, scope, answer)
                    self._handed = None
                    self.on_response_complete()  # starts the next pipelined request, if any: handed back
                    if self._handed is None:
                        return
                    cycle, app = self._handed
            finally:
                self._answering = False

        def _answer(self, cycle, scope, answer) -> None:
            t0 = time.perf_counter()
            name, status, body = answer
            head = [STATUS_LINE[status]]
            for key, value in cycle.default_headers:
                head += [key, b": ", value, b"\r\n"]
            head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
            if status == 503:
                head.append(b"retry-after: 1\r\n")
            if not cycle.keep_alive:
                head.append(b"connection: close\r\n")
            self.transport.write(b"".join(head) + b"\r\n" + body)
            # What uvicorn's send() does once a response is complete: a body still arriving is dropped,
            # the connection is closed unless kept alive, and the next pipelined request starts.
            cycle.response_started = cycle.response_complete = True
            cycle.message_event.set()
            if not cycle.keep_alive:
                self.transport.close()
            seconds = time.perf_counter() - t0
            state.metrics.request(name, status, seconds)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(json.dumps({"event": "request", "method": "GET", "path": scope["path"], "status": status,
                                      "ms": round(seconds * 1e3, 3), "lane": "protocol"}))

    return ProbeFastLane


class _HeadSweeper:
    """The request-head deadline of every connection on one coarse timer (as ``runtime.serving.watchdog`` keeps the
    body deadlines): a timer per request costs a heap push and pop each, measurable at 64 clients. A connection only
    notes when its head began; the timer, armed while connections are open, fires every quarter of the deadline
    (at most a second) and answers 408 to those whose head is overdue."""

    def __init__(self, state: ServerState) -> None:
        self.state, self.timer = state, None

    def arm(self, loop, connections) -> None:
        if self.timer is None:
            self.timer = loop.call_later(min(1.0, self.state.head_timeout_s / 4), self.sweep, loop, connections)

    def sweep(self, loop, connections) -> None:
        self.timer = None
        now, limit = loop.time(), self.state.head_timeout_s
        for conn in list(connections):
            since = getattr(conn, "_head_since", None)
            if since is not None and now - since > limit:
                conn._head_expired()
        if connections:
            self.arm(loop, connections)

