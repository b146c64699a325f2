"""uvicorn's httptools protocol with the gateway's connection hygiene, given to uvicorn as `http=`.

Three things change; the parsing stays llhttp's (through httptools) and the ASGI cycle stays uvicorn's:

- Deadlines, the rate rule and the connection cap (app/server/connections.py): a connection registers
  when it opens (or is refused with a 503 beyond the cap) and keeps its read deadline, its body's start
  and size, and its write deadline up to date: the write deadline is armed when the transport's buffer
  passes its high-water mark (uvicorn then awaits the drain before the next part of an answer) and
  cleared when it drains; a connection that misses it is aborted, its unsent bytes dropped. When the
  registry is crowded, each answer says `Connection: close` (uvicorn adds it when keep_alive is off).
- Upgrade offers the server does not take are declined, and the request is served as HTTP/1.1 with its
  body. llhttp stops at the end of a head that offers an upgrade (`Connection: Upgrade` + `Upgrade: h2c`,
  as Java's HttpClient and `curl --http2` send on plain HTTP) and reports the offset where the other
  protocol would begin; uvicorn then answers with an empty body and the parser is left in a state where
  the rest of the connection is garbage (uvicorn#2722). Here the head is written again without the offer
  and fed, with everything after it, to a fresh parser: the body, and any keep-alive or pipelined request
  behind it, are parsed by llhttp like those of any request. WebSocket upgrades (when a WebSocket library
  is installed) keep uvicorn's path; CONNECT, which llhttp also reports as an upgrade, is not replayed
  (it would offer again) and keeps uvicorn's answer.
- An answer's head and its first body part leave in one system call (`HeadWithBody`): uvicorn writes the
  head when the app starts the response and the body when it sends it, two writes, two packets and two
  wake-ups of the reader for every answer; here the head is held until the body's first part and both are
  handed to the transport together (one writev). A head whose body has not come by the end of the loop turn
  (a streamed answer still waiting for its first part) is written alone then, as uvicorn would have.

The ASGI app puts the worker's Connections in the lifespan state under STATE_KEY (app/main.py).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .connections import Connections

STATE_KEY = "connections"
# At shutdown, how long a connection accepted but not yet sending is given for its request to arrive.
SHUTDOWN_GRACE_S = 1.0
# Hop-by-hop words of an upgrade offer, dropped when the head is replayed.
_OFFER_HEADERS = frozenset({b"upgrade", b"http2-settings"})
_OFFER_TOKENS = frozenset({b"upgrade", b"http2-settings"})
_BAD_REQUEST = "Invalid HTTP request received."
_REFUSAL_BODY = orjson.dumps(
    {"error": {"message": "too many open connections, retry later", "type": "server_error", "code": "overloaded"}}
)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)

_TOO_LARGE_BODY = orjson.dumps(
    {"error": {"message": "request head too large", "type": "invalid_request_error", "code": "headers_too_large"}}
)
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


class HeadWithBody:
    """The transport as one response cycle sees it: its answer's head is held until the first body part (or
    the end of the loop turn, or a close) and written with it in one call. Everything else is the transport's."""

    __slots__ = ("cycle", "head", "loop", "started", "transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.cycle = weakref.ref(cycle)  # the cycle holds this transport: no reference cycle (garbage for the GC)
        self.loop = loop
        self.head: bytes | None = None
        self.started = False  # the head was written or is held

    def write(self, data: bytes) -> None:
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.writelines((head, data))
        elif not self.started and getattr(self.cycle(), "response_started", False):
            self.started = True  # uvicorn's first write after the response started: the head
            self.head = data
            self.loop.call_soon(self.flush)
        else:  # a 100 Continue before the answer, a body part
            self.transport.write(data)

    def flush(self) -> None:
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.write(head)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class GatewayProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        connections = app_state.get(STATE_KEY)
        if not isinstance(connections, Connections):
            raise RuntimeError(f"the app's lifespan state has no {STATE_KEY!r} (app.server.Connections)")
        self.registry = connections
        self.deadline = 0.0  # loop time by which the current read must be done; 0: none
        self.write_deadline = 0.0  # loop time by which the unsent bytes must be taken; 0: none
        self.body_started = 0.0
        self.body_bytes = 0
        self.head_started = 0.0
        self.head_bytes = 0  # of the head being received (llhttp keeps no limit of its own)
        self.refused_head = False
        self.idle_since = 0.0
        self.address: str | None = None
        self.reading_body = False
        self.declined = False  # the head just parsed offered an upgrade that is not taken
        self.requests_begun = 0
        self.closing = False  # the server is shutting down: the request being sent is the last one

    # The registry's view of the connection (connections.Conn).
    def reading_paused(self) -> bool:
        return self.flow is not None and self.flow.read_paused

    def expire(self) -> None:
        """Close; abort when bytes are still unsent (a close would wait for a reader that does not read)."""
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        elif not self.transport.is_closing():
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.address = self.client[0] if self.client else None
        if not self.registry.admit(self):
            transport.write(REFUSAL)
            transport.close()
            return
        self.head_started = self.loop.time()
        self.deadline = self.head_started + self.registry.rules.head_timeout_s

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_deadline = self.loop.time() + self.registry.rules.write_timeout_s

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_deadline = 0.0

    def on_response_complete(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # else a pipelined request has begun
            self.idle_since = self.loop.time()
        super().on_response_complete()

    def timeout_keep_alive_handler(self) -> None:
        self._close_gently()

    def shutdown(self) -> None:
        """uvicorn's shutdown closes every connection without a request in flight. Two of those are most
        likely carrying one: a head partly received, and a connection accepted moments ago whose request
        has not arrived yet (a client that connects writes its request at once). Closing those loses a
        request the client has sent; they get until the head deadline, at most SHUTDOWN_GRACE_S for the
        fresh one, and their answer says `Connection: close`. uvicorn waits for them (within its graceful
        timeout); the sweep closes them if nothing comes."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        if self.transport.is_closing() or self.refused_head:
            return
        if self.head_bytes:  # a head partly received: its deadline stands
            self.closing = True
        elif self.requests_begun == 0:  # accepted, nothing received yet
            self.closing = True
            self.deadline = min(self.deadline or float("inf"), self.loop.time() + SHUTDOWN_GRACE_S)
        else:
            self._close_gently()

    def _close_gently(self) -> None:
        """Close, leaving the reader write_timeout_s to take what is still unsent (then the sweep aborts)."""
        if self.transport.get_write_buffer_size() and not self.write_deadline:
            self.write_deadline = self.loop.time() + self.registry.rules.write_timeout_s
        if not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.leave(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused_head:
            return  # dropped: the client reads the 431, then closes (or the head deadline closes)
        self._unset_keepalive_if_required()
        if self.reading_body:
            self.deadline = self.loop.time() + self.registry.rules.body_timeout_s
        else:
            self.head_bytes += len(data)
        while True:
            try:
                self.parser.feed_data(data)
                if self.head_bytes > self.registry.rules.max_head_bytes:  # still no end of head
                    self.refused_head = True
                    refusal = self.registry.rules.head_refusal
                    self.transport.write(refusal(self.url) if refusal else HEAD_TOO_LARGE)
                    self.transport.write_eof()  # a close with unread bytes would reset before the answer
                return
            except httptools.HttpParserError:
                self.logger.warning(_BAD_REQUEST)
                self.send_400_response(_BAD_REQUEST)
                return
            except httptools.HttpParserUpgrade as exc:
                if not self.declined:
                    if self._should_upgrade():
                        self.registry.leave(self)  # the WebSocket protocol takes the connection over
                        self.deadline = 0.0
                        self.handle_websocket_upgrade()
                    else:
                        self._unsupported_upgrade_warning()
                    return
                data = self._replay_head() + data[exc.args[0] :]

    # httptools parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.requests_begun += 1
        self.idle_since = 0.0
        if not self.deadline:
            self.head_started = self.loop.time()
            self.deadline = self.head_started + self.registry.rules.head_timeout_s

    def on_headers_complete(self) -> None:
        parser = self.parser
        if parser.should_upgrade() and not self._should_upgrade() and parser.get_method() != b"CONNECT":
            self.declined = True  # the body comes after the offer: parsed by the parser of the replay
            return
        self.reading_body = True
        self.head_bytes = 0
        self.head_started = self.idle_since = 0.0
        self.body_started = self.loop.time()
        self.body_bytes = 0
        self.deadline = self.body_started + self.registry.rules.body_timeout_s
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = HeadWithBody(self.transport, self.cycle, self.loop)  # type: ignore[assignment]
            if self.closing or self.registry.crowded():
                self.cycle.keep_alive = False  # its answer says Connection: close, then the connection closes

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.declined:
            return
        self.reading_body = False
        self.deadline = self.body_started = 0.0
        super().on_message_complete()

    def _replay_head(self) -> bytes:
        """The declined request's head without its upgrade offer, and a fresh parser to read it."""
        version = self.parser.get_http_version().encode("ascii")
        lines = [self.parser.get_method(), b" ", self.url, b" HTTP/", version, b"\r\n"]
        for name, value in self.headers:
            if name in _OFFER_HEADERS:
                continue
            if name == b"connection":
                tokens = [t.strip() for t in value.split(b",")]
                value = b", ".join(t for t in tokens if t and t.lower() not in _OFFER_TOKENS)
                if not value:
                    continue
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        self.declined = False
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn sets its own
        return b"".join(lines)
