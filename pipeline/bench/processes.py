"""The processes a benchmark starts (pinned to CPUs when asked, each in its own session so
that stopping it stops its children), free ports, readiness, and nginx's config."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pipeline.bench.wrk import pinned
from pipeline.errors import PipelineError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 15.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                response.read()
                return
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.1)
    raise PipelineError(
        f"{url} did not answer within {timeout:g}s ({last})",
        hint="run the target by hand to see why it does not start",
    )


class Processes:
    """Processes started by the benchmark; all are stopped by ``stop_all``."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        cpus: Sequence[int] = (),
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=pinned(cpus),
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def nginx_conf(workdir: Path, server: str, workers: int = 1) -> Path:
    conf = workdir / f"nginx-{abs(hash(server))}.conf"
    conf.write_text(
        textwrap.dedent(
            f"""\
            daemon off;
            master_process {"on" if workers > 1 else "off"};
            worker_processes {workers};
            pid {workdir}/nginx-{abs(hash(server))}.pid;
            error_log {workdir}/nginx-error.log error;
            events {{ worker_connections 4096; }}
            http {{
              access_log off;
              client_body_temp_path {workdir}/body;
              proxy_temp_path {workdir}/proxy;
              fastcgi_temp_path {workdir}/fastcgi;
              uwsgi_temp_path {workdir}/uwsgi;
              scgi_temp_path {workdir}/scgi;
              keepalive_requests 1000000;
              {server}
            }}
            """
        )
    )
    return conf
