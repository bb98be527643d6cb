"""One JSON line per request on stdout, written in batches off the hot path."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

PIPE_BUF = 4096


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[n:]


class AccessLog:
    def __init__(self, enabled: bool = True, fd: int | None = None) -> None:
        self.enabled = enabled
        self.fd = sys.stdout.fileno() if fd is None else fd
        self._lines: list[bytes] = []
        self._size = 0
        self._handle: asyncio.TimerHandle | None = None

    def log(self, record: dict[str, object]) -> None:
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= 32768:
            self.flush()
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(0.05, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        lines, self._lines, self._size = self._lines, [], 0
        # Chunks of whole lines no bigger than PIPE_BUF stay atomic when workers share a pipe.
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > PIPE_BUF:
                _write_all(self.fd, b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            _write_all(self.fd, b"".join(chunk))


def log_event(message: str, **fields: object) -> None:
    """A JSON line for a lifecycle event (start, reload, drain), on stderr."""
    record: dict[str, object] = {"ts": round(time.time(), 3), "event": message, "pid": os.getpid()}
    record.update(fields)
    _write_all(sys.stderr.fileno(), json.dumps(record).encode() + b"\n")
