"""Processes: the worker event loop, signals (drain, reload), and the supervisor.

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel spreads
connections across workers.  With one worker the gateway runs in-process; with more,
a supervisor forks them, forwards SIGTERM/SIGHUP, restarts a crashed worker and exits
0 once every worker has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import uvloop

from .accesslog import AccessLog, log_event
from .admin import start_admin
from .client import Gateway
from .config import Config, ConfigError, load
from .metrics import Metrics
from .runtime import Runtime

#: The config file, or the files merged in order (``--config`` repeated).
Paths = str | Sequence[str]


@dataclass(frozen=True)
class Overrides:
    host: str | None = None
    port: int | None = None
    workers: int | None = None
    admin_port: int | None = None

    def apply(self, config: Config) -> Config:
        if self.admin_port is not None:
            config = dataclasses.replace(
                config, admin=dataclasses.replace(config.admin, port=self.admin_port)
            )
        server = config.server
        if self.host is not None:
            server = dataclasses.replace(server, host=self.host)
        if self.port is not None:
            server = dataclasses.replace(server, port=self.port)
        if self.workers is not None:
            server = dataclasses.replace(server, workers=self.workers)
        return dataclasses.replace(config, server=server)


def available_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota: float | None = None
    try:
        with open(f"{cgroup}/cpu.max") as f:
            q, period = f.read().split()[:2]
        if q != "max":
            quota = int(q) / int(period)
    except (OSError, ValueError):
        try:
            with open(f"{cgroup}/cpu/cpu.cfs_quota_us") as f:
                q_us = int(f.read())
            with open(f"{cgroup}/cpu/cpu.cfs_period_us") as f:
                p_us = int(f.read())
            if q_us > 0 and p_us > 0:
                quota = q_us / p_us
        except (OSError, ValueError):
            pass
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def worker_count(config: Config) -> int:
    return config.server.workers or available_cpus()


def err(message: str) -> None:
    print(f"gateway: {message}", file=sys.stderr, flush=True)


# -- worker -------------------------------------------------------------------------


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Unexpected errors in callbacks: one JSON line, not a multi-line traceback."""
    exc = context.get("exception")
    log_event("event loop error", detail=str(context.get("message")), error=repr(exc))


def _reloader(path: Paths, overrides: Overrides, gw: Gateway, workers: int) -> Callable[[], None]:
    metrics = gw.metrics

    def on_reload() -> None:
        try:
            new = overrides.apply(load(path))
            new_runtime = Runtime(new, metrics, workers)
        except Exception as e:  # a bad config, or anything while compiling: keep the old one
            metrics.reloads["rejected"] += 1
            error = f"config error: {e}" if isinstance(e, ConfigError) else repr(e)
            log_event("config reload rejected, keeping the old config", error=error)
            return
        old, gw.runtime = gw.runtime, new_runtime
        new_runtime.start()
        old.retire()
        gw.accesslog.enabled = new.server.access_log
        metrics.reloads["ok"] += 1
        log_event("config reloaded", routes=len(new.routes))

    return on_reload


async def _housekeeping(gw: Gateway) -> None:
    tick = 0
    while True:
        await asyncio.sleep(0.1)  # the resolution of upstream timeouts
        tick += 1
        gw.check_timeouts()
        if tick % 5 == 0:
            gw.sweep_idle()  # keep-alive and header timeouts
        if tick % 50 == 0:
            gw.runtime.sweep()


async def _drain(gw: Gateway, timeout: float) -> int:
    """Let requests in flight finish, closing connections as they go idle; abort the rest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in list(gw.connections):
            if c.active is None and c.tunnel is None:
                c.close()
        if not gw.connections:
            break
        await asyncio.sleep(0.02)
    leftover = len(gw.connections)
    for c in list(gw.connections):
        c.abort()
    return leftover


async def serve(path: Paths, config: Config, overrides: Overrides, workers: int) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_log_loop_error)
    metrics = Metrics()
    runtime = Runtime(config, metrics, workers)
    gw = Gateway(runtime, metrics, AccessLog(config.server.access_log))
    s = config.server
    a = config.admin
    try:
        server = await loop.create_server(gw.factory, s.host, s.port, reuse_port=True, backlog=2048)
    except OSError as e:
        err(f"cannot listen on {s.host}:{s.port}: {e.strerror or e}")
        return 1
    try:
        admin = await start_admin(gw, a.host, a.port)
    except OSError as e:
        err(f"cannot listen on {a.host}:{a.port} (admin): {e.strerror or e}")
        return 1
    runtime.start()
    stop: asyncio.Future[str] = loop.create_future()

    def on_stop(name: str) -> None:
        if not stop.done():
            stop.set_result(name)

    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, _reloader(path, overrides, gw, workers))
    keeper = loop.create_task(_housekeeping(gw))
    gc.freeze()  # startup objects never need collecting: keep them out of GC passes
    log_event(
        "worker listening",
        host=s.host,
        port=s.port,
        admin=f"{a.host}:{a.port}",
        routes=len(config.routes),
    )
    why = await stop
    # Drain: stop accepting, close idle keep-alive connections, let requests finish.
    # The admin listener stays up meanwhile: /readyz answers 503.
    gw.draining = True
    server.close()
    log_event("draining", signal=why, in_flight=metrics.in_flight)
    leftover = await _drain(gw, s.drain_timeout)
    admin.close()
    keeper.cancel()
    gw.runtime.retire()
    gw.accesslog.flush()
    log_event("worker stopped", aborted_connections=leftover)
    return 0


def run_worker(path: Paths, config: Config, overrides: Overrides, workers: int) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(path, config, overrides, workers))


# -- supervisor ---------------------------------------------------------------------


def _check_bindable(host: str, port: int) -> str | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
    except OSError as e:
        return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def _die_with_parent(parent: int) -> None:
    """A worker gets SIGTERM (and drains) if the supervisor dies: never an orphan."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the supervisor died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


class _Supervisor:
    """Forks the workers, forwards SIGTERM/SIGHUP, restarts a crashed worker."""

    def __init__(self, path: Paths, config: Config, overrides: Overrides, n: int) -> None:
        self.path = path
        self.config = config
        self.overrides = overrides
        self.n = n
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (slot, started)
        self.stopping = False
        self.failed = False

    def spawn(self, slot: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent(parent)
                code = run_worker(self.path, self.config, self.overrides, self.n)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        self.children[pid] = (slot, time.monotonic())
        if self.stopping:  # SIGTERM came between fork and here: this one missed it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def forward(self, sig: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def on_term(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.forward(signal.SIGTERM)

    def on_hup(self, signum: int, _frame: object) -> None:
        """Validate first: a bad config is one log line and the workers keep the old one."""
        try:
            self.config = self.overrides.apply(load(self.path))
        except Exception as e:  # never let a bad config kill the supervisor
            error = f"config error: {e}" if isinstance(e, ConfigError) else repr(e)
            log_event("config reload rejected, keeping the old config", error=error)
            return
        self.forward(signal.SIGHUP)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.on_term)
        signal.signal(signal.SIGHUP, self.on_hup)
        log_event("supervisor started", workers=self.n)
        for slot in range(self.n):
            self.spawn(slot)
        crashes = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            entry = self.children.pop(pid, None)
            if entry is None:
                continue
            slot, started = entry
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                self.failed = self.failed or code != 0
                continue
            crashes = crashes + 1 if time.monotonic() - started < 5 else 0
            log_event("worker exited, restarting it", worker_pid=pid, exit_code=code)
            if crashes:
                time.sleep(min(5.0, 0.2 * 2**crashes))
            if not self.stopping:
                self.spawn(slot)
        log_event("supervisor stopped")
        return 1 if self.failed else 0


def supervise(path: Paths, config: Config, overrides: Overrides, n: int) -> int:
    problem = _check_bindable(config.server.host, config.server.port) or _check_bindable(
        config.admin.host, config.admin.port
    )
    if problem:
        err(problem)
        return 1
    return _Supervisor(path, config, overrides, n).run()


def run(path: Paths, config: Config, overrides: Overrides) -> int:
    n = worker_count(config)
    if n == 1:
        return run_worker(path, config, overrides, 1)
    return supervise(path, config, overrides, n)
