"""A fault-injecting TCP proxy the tests own, in front of the real registry.

Modes (switchable at run time with ``configure``):

- ``pass``: forward everything;
- ``reset``: reset (TCP RST) the first ``count`` connections, then forward;
- ``status``: answer the first request of the first ``count`` connections with ``status``
  (503, 429...) and close, then forward;
- ``stall``: accept the first ``count`` connections and never answer, then forward;
- ``stall_after_bytes``: forward until ``count`` bytes went client -> registry, then every
  connection hangs (a push "killed half-way" is then one kill away); switching to ``pass``
  resumes the held connections where they stopped;
- ``flaky``: reset every ``count``-th connection, ``limit`` times (-1: forever), so faults
  spread over every client however many connections each opens;
- ``flaky_status``: the same, but that connection's request is answered ``status`` (with
  ``retry_after``) instead of reset;
- ``lose_answer``: forward the request of the first ``count`` matching connections, let the
  registry act on it, then reset the client instead of relaying the answer (the registry took
  the write; the client never heard).

``skip`` lets that many connections pass before the faults start (``status`` and ``reset``:
a fault at the n-th request, since urllib opens one connection per request); ``match`` (a
regular expression) limits the faults to requests whose first line matches it, e.g.
``r"^PUT /v2/.*/manifests/3 "``. ``retry_after`` is the ``Retry-After`` header a ``status``
answer carries. ``requests`` lists the first line of every request that was inspected.

``count=-1`` means forever. The proxy listens on 127.0.0.1 (a free port), so Docker treats
``127.0.0.1:<port>`` as an insecure registry and pushes through it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

MODES = (
    "pass",
    "reset",
    "status",
    "stall",
    "stall_after_bytes",
    "flaky",
    "flaky_status",
    "lose_answer",
)
REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class FaultProxy:
    def __init__(
        self,
        target: tuple[str, int] = ("127.0.0.1", 5000),
        *,
        mode: str = "pass",
        count: int = 0,
        status: int = 503,
        port: int = 0,
        limit: int = -1,
    ) -> None:
        self.target = target
        self.limit = limit
        self._lock = threading.Lock()
        self.mode = "pass"
        self.count = 0
        self.status = status
        self.connections = 0
        self.faults = 0
        self.bytes_up = 0
        self._stop = threading.Event()
        self._release = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.skip = 0
        self.match: re.Pattern[bytes] | None = None
        self.retry_after = "0"
        self.requests: list[str] = []
        self.configure(mode, count, status)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(64)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def configure(
        self,
        mode: str,
        count: int = 0,
        status: int | None = None,
        *,
        skip: int = 0,
        match: str | None = None,
        retry_after: str = "0",
    ) -> None:
        """Switch mode; stalled connections are dropped so clients see the change."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        with self._lock:
            self.mode, self.count, self.faults, self.bytes_up = mode, count, 0, 0
            self.skip, self.retry_after, self.seen = skip, retry_after, 0
            self.match = re.compile(match.encode()) if match else None
            if status is not None:
                self.status = status
        self._release.set()
        self._release = threading.Event()

    def __enter__(self) -> FaultProxy:
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._release.set()
        with contextlib.suppress(OSError):
            self._server.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    # -- internals --

    def _fault_now(self) -> str:
        """The fault for a new connection (and count it), or 'pass'."""
        with self._lock:
            self.connections += 1
            if self.mode in ("pass", "stall_after_bytes"):
                return self.mode
            if self.mode in ("flaky", "flaky_status"):
                under_limit = self.limit < 0 or self.faults < self.limit
                if self.connections % self.count == 0 and under_limit:
                    self.faults += 1
                    return "reset" if self.mode == "flaky" else "status"
                return "pass"
            self.seen += 1
            if self.seen <= self.skip:
                return "pass"
            if self.count < 0 or self.faults < self.count:
                self.faults += 1
                return self.mode
            return "pass"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._sockets.add(client)
            thread = threading.Thread(target=self._handle, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _handle(self, client: socket.socket) -> None:
        if self.mode in ("status", "flaky_status") and self._is_tls(client):
            # Docker probes HTTPS first on insecure registries; an HTTP status cannot answer a
            # TLS handshake, so the probe passes and the plain HTTP requests get the faults.
            with self._lock:
                self.connections += 1
            fault = "pass"
        elif self.match is not None and self.mode in ("status", "reset", "lose_answer"):
            line = self._first_line(client)
            with self._lock:
                self.requests.append(line.decode(errors="replace"))
            fault = self._fault_now() if self.match.search(line) else "pass"
        else:
            fault = self._fault_now()
        try:
            if fault == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if fault == "status":
                self._answer_status(client)
                return
            if fault == "stall":
                self._wait_released()
                return
            if fault == "lose_answer":
                self._lose_answer(client)
                return
            self._forward(client)
        except OSError:
            pass
        finally:
            self._sockets.discard(client)
            with contextlib.suppress(OSError):
                client.close()

    @staticmethod
    def _first_line(client: socket.socket) -> bytes:
        """The request line, peeked (the request is still forwarded whole)."""
        client.settimeout(5)
        data = b""
        try:
            for _ in range(50):
                data = client.recv(4096, socket.MSG_PEEK)
                if b"\r\n" in data or not data:
                    break
                time.sleep(0.01)
        except OSError:
            return b""
        finally:
            with contextlib.suppress(OSError):
                client.settimeout(None)
        return data.split(b"\r\n", 1)[0]

    @staticmethod
    def _is_tls(client: socket.socket) -> bool:
        client.settimeout(5)
        try:
            first = client.recv(1, socket.MSG_PEEK)
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                client.settimeout(None)
        return first == b"\x16"

    def _wait_released(self) -> None:
        release = self._release
        while not (self._stop.is_set() or release.is_set()):
            release.wait(0.2)

    def _answer_status(self, client: socket.socket) -> None:
        client.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(65536)
            if not chunk:
                return
            data += chunk
        reason = REASONS.get(self.status, "Error")
        body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
        head = (
            f"HTTP/1.1 {self.status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: {self.retry_after}\r\n"
            "Connection: close\r\n\r\n"
        )
        client.sendall(head.encode() + body)

    def _lose_answer(self, client: socket.socket) -> None:
        """The request reaches the registry, which answers; the client gets a reset instead."""
        upstream = socket.create_connection(self.target, timeout=30)
        self._sockets.add(upstream)

        def pump() -> None:
            with contextlib.suppress(OSError):
                while chunk := client.recv(65536):
                    upstream.sendall(chunk)

        pumping = threading.Thread(target=pump, daemon=True)
        pumping.start()
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = upstream.recv(65536)
            if not chunk:
                break
            answer += chunk
        upstream.close()
        # A reset, not a close: linger 0, and the pump woken (SHUT_RD sends nothing) so that
        # the close in _handle is the socket's last reference.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RD)
        pumping.join(timeout=5)

    def _forward(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target, timeout=10)
        upstream.settimeout(None)
        self._sockets.add(upstream)
        done = threading.Event()

        def pipe(src: socket.socket, dst: socket.socket, up: bool) -> None:
            try:
                while not done.is_set():
                    data = src.recv(65536)
                    if not data:
                        break
                    if up and self._over_budget(len(data)):
                        self._wait_released()
                        if self.mode != "pass" or self._stop.is_set():
                            break  # switched to pass: the held connection resumes
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                done.set()
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

        back = threading.Thread(target=pipe, args=(upstream, client, False), daemon=True)
        back.start()
        pipe(client, upstream, True)
        back.join(timeout=5)
        self._sockets.discard(upstream)
        with contextlib.suppress(OSError):
            upstream.close()

    def _over_budget(self, size: int) -> bool:
        with self._lock:
            if self.mode != "stall_after_bytes":
                return False
            self.bytes_up += size
            return self.count >= 0 and self.bytes_up > self.count


# --- helpers for the registry tests: tiny multi-platform images, built without pulling ---


def build_image(
    tag: str,
    workdir: Path,
    *,
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
    content: bytes | None = None,
    size: int = 4096,
    base: str = "scratch",
    labels: Mapping[str, str] | None = None,
    extra_tags: Sequence[str] = (),
    source_date_epoch: int | None = None,
) -> str:
    """Build a ``FROM <base>`` + one random file image for ``platforms`` into the local
    (containerd) store, tagged ``tag`` (and ``extra_tags``), with max-mode provenance; return
    its index digest. ``source_date_epoch`` pins the image's timestamps, as ``docker.build``
    does with the commit time."""
    import os

    context = workdir / f"ctx-{os.urandom(4).hex()}"
    context.mkdir(parents=True)
    (context / "payload.bin").write_bytes(content if content is not None else os.urandom(size))
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY payload.bin /payload.bin\n")
    argv = ["docker", "buildx", "build", "--quiet", "--load"]
    argv += ["--platform", ",".join(platforms), "--provenance", "mode=max"]
    if source_date_epoch is not None:
        argv += ["--build-arg", f"SOURCE_DATE_EPOCH={source_date_epoch}"]
    for key, value in (labels or {}).items():
        argv += ["--label", f"{key}={value}"]
    for name in (tag, *extra_tags):
        argv += ["--tag", name]
    subprocess.run([*argv, str(context)], check=True, capture_output=True, text=True)
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def remove_images(*refs: str) -> None:
    subprocess.run(["docker", "image", "rm", "--force", *refs], capture_output=True, check=False)


def cosign_keys(directory: Path, password: str = "test-only-password") -> dict[str, str]:
    """A throwaway cosign key pair; returns the environment that signs and verifies with it."""
    import os

    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["cosign", "generate-key-pair"],
        cwd=directory,
        env={**os.environ, "COSIGN_PASSWORD": password},
        check=True,
        capture_output=True,
    )
    return {
        "COSIGN_KEY": (directory / "cosign.key").read_text(),
        "COSIGN_PASSWORD": password,
        "COSIGN_PUBLIC_KEY": (directory / "cosign.pub").read_text(),
    }


def push_image(ref: str, workdir: Path, **kw: object) -> str:
    """Build a tiny image, push it, drop the local copy; return its digest."""
    digest = build_image(ref, workdir, **kw)  # type: ignore[arg-type]
    try:
        for attempt in range(3):  # set-up, not the code under test: ride out a busy engine
            done = subprocess.run(
                ["docker", "push", "--quiet", ref], capture_output=True, text=True
            )
            if done.returncode == 0:
                break
            time.sleep(1 + attempt)
        else:
            raise AssertionError(f"set-up push of {ref} failed: {done.stderr.strip()}")
    finally:
        remove_images(ref)
    return digest


def push_half_way(
    proxy: FaultProxy, record: Path, root: Path, past: int, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """``invoke docker.push --record RECORD`` in a session of its own, returned once more than
    ``past`` bytes went up through ``proxy`` (a ``stall_after_bytes`` proxy then holds it)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "invoke", "docker.push", "--record", str(record)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while proxy.bytes_up <= past and time.monotonic() < deadline:
        time.sleep(0.1)
    if proxy.bytes_up <= past:
        process.kill()
        process.wait()
        raise AssertionError("the push never got half-way")
    time.sleep(0.5)
    return process
