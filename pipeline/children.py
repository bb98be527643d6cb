"""Child processes that die with the task: each runs in its own process group (killed whole
when the task stops waiting for it: an error, Ctrl-C, a timeout) and, on Linux, with
``PR_SET_PDEATHSIG`` so the kernel kills it when the task itself is killed (``kill -9`` on
invoke): an orphaned ``docker push`` must never finish, and write a release tag, on its own.

A command may also be given an idle limit: no output on stdout or stderr for that long is a
stall (``StalledError``), not a command to wait ``timeout`` for.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1


class StalledError(subprocess.TimeoutExpired):
    """The command wrote nothing for ``idle`` seconds."""

    def __init__(self, cmd: Sequence[str], idle: float) -> None:
        super().__init__(list(cmd), idle)
        self.idle = idle


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: ask the kernel for SIGKILL when the parent dies (Linux), and exit at
    once if it died between the fork and this call."""

    def setup() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(137)

    return setup


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL the command's whole process group, then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()


def run_child(
    argv: Sequence[str],
    *,
    input: str | None,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    timeout: float | None,
    idle: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(..., capture_output=True, text=True)`` with the guarantees above;
    ``subprocess.TimeoutExpired`` past ``timeout``, ``StalledError`` past ``idle``."""
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with(os.getpid()),
    )
    try:
        if idle is None:
            out, err = process.communicate(input, timeout=timeout)
        else:
            out, err = _watch(process, argv, input, timeout, idle)
    except BaseException:
        kill(process)
        raise
    return subprocess.CompletedProcess(list(argv), process.returncode, out, err)


def _watch(
    process: subprocess.Popen[str],
    argv: Sequence[str],
    input: str | None,
    timeout: float | None,
    idle: float,
) -> tuple[str, str]:
    started = last = time.monotonic()
    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def read(name: str, stream: IO[str]) -> None:
        nonlocal last
        for line in iter(stream.readline, ""):
            chunks[name].append(line)
            last = time.monotonic()

    assert process.stdout is not None and process.stderr is not None
    readers = [
        threading.Thread(target=read, args=("out", process.stdout), daemon=True),
        threading.Thread(target=read, args=("err", process.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    if input is not None and process.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(input)
            process.stdin.close()
    while process.poll() is None:
        now = time.monotonic()
        if timeout is not None and now - started > timeout:
            raise subprocess.TimeoutExpired(list(argv), timeout)
        if now - last > idle:
            raise StalledError(argv, idle)
        time.sleep(0.1)
    for reader in readers:
        reader.join(timeout=5)
    return "".join(chunks["out"]), "".join(chunks["err"])
