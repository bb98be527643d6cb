"""Upstream targets: round-robin choice, passive and active health, keep-alive pools.

``UpstreamConnection`` is an asyncio protocol carrying one exchange at a time; the
response is parsed with httptools and handed to a ``Forward`` sink (see forward.py)
through plain method calls, so body bytes go from upstream to client without
being queued.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, cast

import httptools

from .config import Upstream

MAX_RESPONSE_HEAD = 64 * 1024  # bytes (with what follows in the same reads)


class Sink(Protocol):
    """What an upstream connection reports to (implemented by forward.Forward)."""

    def upstream_head(self, status: int, lines: list[bytes], keep_alive: bool) -> None: ...
    def upstream_body(self, data: bytes) -> None: ...
    def upstream_done(self) -> None: ...
    def upstream_lost(self, exc: BaseException | None) -> None: ...
    def upstream_writable(self, writable: bool) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "close_delimited",
        "closed",
        "idle_since",
        "in_head",
        "interim",
        "keep_alive",
        "last_data",
        "parser",
        "paused",
        "raw",
        "reused",
        "sink",
        "skip_body",
        "target",
        "transport",
        "writable",
    )

    def __init__(self, target: TargetState) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: Sink | None = None
        self.closed = False
        self.keep_alive = True
        self.idle_since = 0.0
        self.reused = False
        self.paused = False
        self.writable = True
        self.skip_body = False
        self.close_delimited = False
        self.last_data = 0.0
        self.in_head = False
        self.interim = False
        self.raw = b""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_data = time.monotonic()
        if self.in_head:  # keep the raw head: its lines are forwarded without re-parsing
            self.raw = self.raw + data if self.raw else data
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            self.keep_alive = False
            sink = self.sink
            self.close()
            if sink is not None:
                sink.upstream_lost(e)
            return
        if self.in_head and len(self.raw) > MAX_RESPONSE_HEAD:  # a head without an end
            self.keep_alive = False
            sink = self.sink
            self.close()
            if sink is not None:
                sink.upstream_lost(None)

    def eof_received(self) -> bool | None:
        self.keep_alive = False
        if self.sink is not None and self.close_delimited:
            self.on_message_complete()  # a body without length ends with the connection
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.upstream_lost(exc)

    def pause_writing(self) -> None:
        self.writable = False
        if self.sink is not None:
            self.sink.upstream_writable(False)

    def resume_writing(self) -> None:
        self.writable = True
        if self.sink is not None:
            self.sink.upstream_writable(True)

    # httptools callbacks (there is no on_header: the head's raw lines are used instead)
    def on_headers_complete(self) -> None:
        raw = self.raw
        end = raw.find(b"\r\n\r\n")
        status = self.parser.get_status_code()
        if self.sink is None:  # unsolicited data: never reuse this connection
            self.keep_alive = False
            self.close()
            return
        if status < 200:
            # 1xx interim responses (103 Early Hints, 100 Continue) are skipped: the final
            # response follows on this connection.  A 101 was never asked for: broken.
            self.raw = raw[end + 4 :] if end >= 0 else b""
            self.interim = True
            if status == 101:
                self.keep_alive = False
            return
        self.raw = b""
        self.in_head = False
        if end < 0 or self.sink is None:  # unsolicited data: never reuse this connection
            self.keep_alive = False
            self.close()
            return
        lines = raw[:end].split(b"\r\n")
        del lines[0]  # the status line
        self.keep_alive = self.parser.should_keep_alive()
        if not self.keep_alive and not self.skip_body and status not in (204, 304):
            names = [line.split(b":", 1)[0].strip().lower() for line in lines]
            self.close_delimited = (
                b"content-length" not in names and b"transfer-encoding" not in names
            )
        sink = self.sink
        if sink is not None:
            sink.upstream_head(status, lines, self.keep_alive)
        if self.skip_body:  # response to HEAD: no body follows whatever the headers say
            self.keep_alive = False
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.upstream_body(body)

    def on_message_complete(self) -> None:
        if self.interim:  # the end of a 1xx: the exchange goes on
            self.interim = False
            return
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.upstream_done()

    # used by the proxy
    def start(self, sink: Sink, head_only: bool) -> None:
        self.sink = sink
        self.in_head = True
        self.raw = b""
        self.interim = False
        self.close_delimited = False
        self.last_data = time.monotonic()
        self.skip_body = head_only
        if self.paused:
            self.resume_reading()

    def pause_reading(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        self.sink = None
        if self.transport is not None:
            self.transport.abort()

    def release(self) -> None:
        """Back to the pool if the exchange ended cleanly, closed otherwise."""
        self.sink = None
        if self.closed or not self.keep_alive or self.paused:
            self.close()
            return
        self.target.put(self)


class TargetState:
    """One upstream target: its health and its pool of idle connections."""

    __slots__ = (
        "active_down",
        "ejected_until",
        "fail_timeout",
        "fails",
        "host",
        "hostport",
        "idle",
        "label",
        "max_fails",
        "max_idle",
        "port",
        "retired",
    )

    def __init__(
        self, host: str, port: int, max_fails: int, fail_timeout: float, max_idle: int
    ) -> None:
        self.host = host
        self.port = port
        self.label = f"{host}:{port}"
        self.hostport = self.label.encode() if port != 80 else host.encode()
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.max_idle = max_idle
        self.fails = 0
        self.ejected_until = 0.0
        self.active_down = False
        self.idle: list[UpstreamConnection] = []
        self.retired = False

    def available(self, now: float) -> bool:
        return not self.active_down and self.ejected_until <= now

    def failed(self, now: float) -> None:
        self.fails += 1
        if self.max_fails and self.fails >= self.max_fails:
            self.ejected_until = now + self.fail_timeout
            self.fails = 0

    def succeeded(self) -> None:
        self.fails = 0

    def take(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    def put(self, conn: UpstreamConnection) -> None:
        if self.retired or len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    async def connect(self, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port), timeout
        )
        return proto

    def sweep(self, max_idle_age: float) -> None:
        cutoff = time.monotonic() - max_idle_age
        keep = []
        for conn in self.idle:
            if conn.closed:
                continue
            if conn.idle_since < cutoff:
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep

    def close_idle(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle = []


class UpstreamGroup:
    """The targets of one route, picked round-robin, with a retry budget."""

    def __init__(self, spec: Upstream) -> None:
        self.spec = spec
        self.targets = [
            TargetState(t.host, t.port, spec.max_fails, spec.fail_timeout, spec.max_idle)
            for t in spec.targets
        ]
        self._next = 0
        self._budget_cap = 10.0
        self._budget = self._budget_cap

    def pick(self, now: float, exclude: TargetState | None = None) -> TargetState:
        targets = self.targets
        n = len(targets)
        if n == 1:
            t = targets[0]
            if not t.active_down and t.ejected_until <= now:
                return t
        for _ in range(n):
            t = targets[self._next % n]
            self._next += 1
            if t is not exclude and not t.active_down and t.ejected_until <= now:
                return t
        for t in targets:  # maybe only the excluded one is healthy
            if t.available(now):
                return t
        # Everything is ejected: try the one whose cool-down ends first rather than fail outright.
        return min(targets, key=lambda t: (t.active_down, t.ejected_until))

    def note_request(self) -> None:
        b = self._budget + self.spec.retry_budget
        self._budget = b if b < self._budget_cap else self._budget_cap

    def take_retry(self) -> bool:
        if self._budget >= 1.0:
            self._budget -= 1.0
            return True
        return False

    def sweep(self) -> None:
        for t in self.targets:
            t.sweep(self.spec.idle_timeout)

    def retire(self) -> None:
        for t in self.targets:
            t.retired = True
            t.close_idle()

    async def health_loop(self) -> None:
        hc = self.spec.health_check
        if hc is None:
            return
        while True:
            await asyncio.gather(*(self._probe(t, hc.path, hc.timeout) for t in self.targets))
            await asyncio.sleep(hc.interval)

    async def _probe(self, target: TargetState, path: str, timeout: float) -> None:
        ok = False
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(target.host, target.port)
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {target.label}\r\nConnection: close\r\n"
                    "User-Agent: gateway-healthcheck\r\n\r\n".encode()
                )
                line = await reader.readline()
                parts = line.split()
                ok = len(parts) >= 2 and parts[1][:1] in (b"2", b"3")
        except (OSError, TimeoutError, ValueError):
            ok = False
        finally:
            if writer is not None:
                writer.close()
        target.active_down = not ok
        if ok:
            target.fails = 0
