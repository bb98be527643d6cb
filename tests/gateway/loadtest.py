"""A bounded load test of one gateway worker on 127.0.0.1: throughput and tail latency.

    uv run python tests/gateway/loadtest.py --connections 256 --seconds 10

Starts a fixed-response uvloop upstream, the gateway (``--workers 1``, API-key auth and
a non-throttling rate limit, access log off) and a uvloop load client in its own
process: N keep-alive connections, one request in flight each (as wrk does).  Prints
req/s, p50, p90, p99 and p99/p50.  ``--gateway-root DIR`` runs another checkout's
gateway (e.g. the code before a change) for comparison.  Everything stops at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY = "load-key"

UPSTREAM = r"""
import asyncio, sys, uvloop
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nhello, world\n"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, data):
        n = data.count(b"\r\n\r\n")
        if n: self.t.write(RESPONSE * n)
async def main():
    loop = asyncio.get_running_loop()
    s = await loop.create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await asyncio.Event().wait()
uvloop.run(main())
"""

CLIENT = r"""
import asyncio, sys, time, uvloop
port, conns, seconds, key = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
REQ = b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: %b\r\n\r\n" % key.encode()
lat = []
errors = 0
async def one(stop_at):
    global errors
    r, w = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        w.write(REQ)
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await r.readexactly(length)
        lat.append(time.perf_counter() - t0)
        if not head.startswith(b"HTTP/1.1 200"):
            errors += 1
    w.close()
async def main():
    stop_at = time.monotonic() + seconds
    warm = time.monotonic() + 1.0
    await asyncio.gather(*(one(stop_at) for _ in range(conns)), return_exceptions=True)
    lat.sort()
    n = len(lat)
    q = lambda p: lat[min(n - 1, int(p * n))] * 1000
    print(f"{n / seconds:.0f} {q(0.5):.2f} {q(0.9):.2f} {q(0.99):.2f} {errors}")
uvloop.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config(port: int, upstream: int, admin: int) -> str:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return (
        f'[server]\nhost = "127.0.0.1"\nport = {port}\naccess_log = false\nworkers = 1\n'
        f"[admin]\nport = {admin}\n"
        f'[api_keys]\nload = "{digest}"\n'
        f'[[routes]]\nname = "bench"\npath = "/"\nauth = {{ keys = ["load"] }}\n'
        "rate_limit = { rate = 1e6, burst = 1000000 }\n"
        f'upstream = {{ targets = ["http://127.0.0.1:{upstream}"] }}\n'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--gateway-root", type=Path, default=ROOT)
    args = parser.parse_args()
    if not 1 <= args.connections <= 2048 or not 0 < args.seconds <= 120:
        raise SystemExit("bounded: 1-2048 connections, at most 120 seconds")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            up_port, gw_port, admin_port = free_port(), free_port(), free_port()
            procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)]))
            cfg = Path(tmp) / "gateway.toml"
            text = config(gw_port, up_port, admin_port)
            if args.gateway_root != ROOT:  # an older gateway: no [admin] table
                text = text.replace(f"[admin]\nport = {admin_port}\n", "")
            cfg.write_text(text)
            env = {**os.environ, "PYTHONPATH": str(args.gateway_root)}
            gw = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--config", str(cfg)],
                cwd=args.gateway_root,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            procs.append(gw)
            wait_port(up_port)
            wait_port(gw_port)
            print("req/s p50_ms p90_ms p99_ms errors  p99/p50  gateway_cpu_us/req")
            for _ in range(args.rounds):
                cpu_before = cpu_seconds(gw.pid)
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CLIENT,
                        str(gw_port),
                        str(args.connections),
                        str(args.seconds),
                        KEY,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=args.seconds + 60,
                    check=True,
                ).stdout.split()
                rps, p50, p90, p99, errors = out
                cpu_us = (cpu_seconds(gw.pid) - cpu_before) / (float(rps) * args.seconds) * 1e6
                ratio = float(p99) / float(p50)
                print(f"{rps} {p50} {p90} {p99} {errors}  {ratio:.1f}x  {cpu_us:.0f}")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
