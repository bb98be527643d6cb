"""Helpers for the gateway tests: real upstream servers on 127.0.0.1 and the gateway
started as a subprocess (``python -m gateway --config FILE``) on a free port."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY_ALICE = "alice-secret"
KEY_BOB = "bob-secret"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            piece = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not piece:
            break
        chunks.append(piece)
    return b"".join(chunks)


# -- upstreams ----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> tuple[int, str]:
        digest = hashlib.sha256()
        n = 0
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                left = size
                while left:
                    piece = self.rfile.read(min(left, 65536))
                    digest.update(piece)
                    left -= len(piece)
                n += size
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                piece = self.rfile.read(min(left, 65536))
                if not piece:
                    break
                digest.update(piece)
                n += len(piece)
                left -= len(piece)
        return n, digest.hexdigest()

    def _handle(self) -> None:
        up = self.server.upstream
        n, digest = self._read_body()
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        with up.lock:
            up.requests.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers)}
            )
            up.hits[self.path] = up.hits.get(self.path, 0) + 1
            hits = up.hits[self.path]
        if path.startswith("/slow"):
            time.sleep(float(query.get("s", "1")))
        if path.startswith("/flaky503") and hits == 1:
            return self._send(503, b'{"flaky":true}')
        if path.startswith("/status/"):
            return self._send(int(path.rsplit("/", 1)[1]), b"{}")
        if path == up.health_path and up.unhealthy:
            return self._send(500, b"{}")
        if path.startswith("/die-before"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if path.startswith("/die-mid"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if path.startswith("/big"):
            size = int(query["n"])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            block = b"b" * 65536
            left = size
            while left:
                piece = block[: min(left, len(block))]
                self.wfile.write(piece)
                left -= len(piece)
            return None
        if path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%b\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return None
        body = json.dumps(
            {
                "upstream": up.name,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_bytes": n,
                "body_sha256": digest,
            }
        ).encode()
        return self._send(200, body)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream", self.server.upstream.name)
        self.send_header("Keep-Alive", "timeout=5")
        self.send_header("Proxy-Authenticate", "Basic")
        self.send_header("X-Secret-Internal", "1")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    upstream: Upstream


class Upstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        self.health_path = "/health"
        self.unhealthy = False
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.upstream = self
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream_factory() -> Iterator[Callable[[str], Upstream]]:
    made: list[Upstream] = []

    def make(name: str) -> Upstream:
        up = Upstream(name)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


@pytest.fixture
def upstream(upstream_factory: Callable[[str], Upstream]) -> Upstream:
    return upstream_factory("a")


# -- the gateway --------------------------------------------------------------------


class Gateway:
    def __init__(self, config: Path, port: int, extra: list[str]) -> None:
        self.config = config
        self.port = port
        self.admin_port = free_port()
        command = [sys.executable, "-m", "gateway", "--config", str(config), "--port", str(port)]
        command += ["--admin-port", str(self.admin_port), *extra]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()
        self.wait_ready()

    @staticmethod
    def _drain(stream: Any, sink: list[str]) -> None:
        for line in iter(stream.readline, b""):
            sink.append(line.decode())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited {self.proc.returncode}: {''.join(self.stderr)}"
                )
            try:
                if self.admin("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("gateway did not become ready")

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def admin(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        """A request to the admin listener (health and metrics)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send raw bytes, half-close, and read everything until the gateway closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return read_all(s)

    def json(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
        status, headers, data = self.request(method, path, **kw)
        return status, headers, json.loads(data) if data else None

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def access_log(self) -> list[dict[str, Any]]:
        time.sleep(0.2)  # the log is flushed every 50 ms
        return [json.loads(line) for line in self.stdout if line.startswith("{")]


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(config: str, *extra: str) -> Gateway:
        path = tmp_path / f"gateway-{len(started)}.toml"
        path.write_text(textwrap.dedent(config))
        args = list(extra) if "--workers" in extra else ["--workers", "1", *extra]
        gw = Gateway(path, free_port(), args)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def route(
    name: str, path: str, targets: list[str], extra: str = "", upstream_extra: str = ""
) -> str:
    """A [[routes]] table as TOML text."""
    quoted = ", ".join(f'"{t}"' for t in targets)
    return textwrap.dedent(
        f"""
        [[routes]]
        name = "{name}"
        path = "{path}"
        {extra}
        [routes.upstream]
        targets = [{quoted}]
        {upstream_extra}
        """
    )
