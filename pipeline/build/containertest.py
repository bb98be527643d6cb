"""``docker.test``: the built image (from the build record) against real containers.

One line per check, ``PASS name (detail)`` or ``FAIL name: why``; every container and network
is labelled with this run's id and removed at the end, also when a check fails; any failure is
one ``GateError`` naming the failed checks.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pipeline import engine
from pipeline.build.record import BuildRecord
from pipeline.errors import GateError, PipelineError
from pipeline.oci.labels import LABEL

LABEL_KEY = "pipeline.build.containertest"
GATEWAY_PORT = 8080
UPSTREAM_PORT = 8000
CONFIG_PATH = "/etc/gateway/gateway.toml"
SLOW_SECONDS = 2.0

# The upstream: the image's own Python, a different command (no other image can be pulled).
UPSTREAM_SCRIPT = f"""
import http.server, time

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/slow"):
            print("slow request started", flush=True)
            time.sleep({SLOW_SECONDS})
            body = b"slow answer from upstream"
        elif self.path.startswith("/hello"):
            body = b"hello from upstream"
        else:
            body = b"upstream catch-all"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print(fmt % args, flush=True)

http.server.ThreadingHTTPServer(("0.0.0.0", {UPSTREAM_PORT}), Handler).serve_forever()
"""

# Run as root inside a throw-away container: what build tooling is left in the image.
INVENTORY_SCRIPT = """
import json, os, shutil
found = {"uv": [], "caches": [], "compilers": [], "git": []}
compilers = {"gcc", "cc", "c++", "g++", "clang", "clang++", "tcc", "cpp"}
for name in sorted(compilers):
    if shutil.which(name):
        found["compilers"].append(shutil.which(name))
for root, dirs, files in os.walk("/"):
    if root in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    for d in dirs:
        path = os.path.join(root, d)
        if d == ".git":
            found["git"].append(path)
        if root.endswith("/.cache") and d in ("pip", "uv"):
            found["caches"].append(path)
    for f in files:
        if f in ("uv", "uvx") and os.access(os.path.join(root, f), os.X_OK):
            found["uv"].append(os.path.join(root, f))
print(json.dumps(found))
"""


def gateway_config(upstream: str, port: int = GATEWAY_PORT) -> str:
    """The test config: one prefix route to the upstream container; nothing else matches."""
    return f"""[server]
port = {port}
workers = 1
drain_timeout = 20.0

[[routes]]
name = "upstream"
path = "/api"
strip_prefix = true

[routes.upstream]
targets = ["{upstream}"]
"""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        if self.ok:
            return f"PASS {self.name}" + (f" ({self.detail})" if self.detail else "")
        return f"FAIL {self.name}: {self.detail}"


@dataclass(frozen=True)
class Response:
    status: int
    body: str


def http_get(port: int, path: str, timeout: float = 10.0) -> Response:
    """GET http://127.0.0.1:PORT/PATH; HTTP errors are responses, not exceptions."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return Response(answer.status, answer.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read().decode(errors="replace"))


def missing_labels(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Labels of the record that the image lacks or carries with another value; the base
    labels are required even if the record has none."""
    required = dict(expected)
    for key in ("base.name", "base.digest"):
        required.setdefault(LABEL + key, actual.get(LABEL + key) or "(missing)")
    return sorted(k for k, v in required.items() if actual.get(k) != v)


def inventory_problems(found: dict[str, list[str]]) -> list[str]:
    """What the runtime image must not contain, from ``INVENTORY_SCRIPT``'s output."""
    problems = []
    for key, what in (
        ("uv", "uv"),
        ("caches", "pip/uv cache"),
        ("compilers", "compiler"),
        ("git", ".git"),
    ):
        for path in found.get(key, []):
            problems.append(f"{what} at {path}")
    return problems


class _Run:
    """One docker.test run: its label, the checks so far, and the report callback."""

    def __init__(
        self, record: BuildRecord, report: Callable[[str], None], run_id: str | None = None
    ) -> None:
        self.record = record
        self.image = record.reference
        self.run_id = run_id or uuid.uuid4().hex[:10]
        self.labels = {LABEL_KEY: self.run_id}
        self.report = report
        self.checks: list[Check] = []

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        check = Check(name, ok, detail)
        self.checks.append(check)
        self.report(check.line())
        return ok

    def attempt(self, name: str, body: Callable[[], str]) -> bool:
        """Run one check: its detail on success, its error as the failure."""
        try:
            detail = body()
        except AssertionError as exc:
            return self.add(name, False, str(exc) or "assertion failed")
        except PipelineError as exc:
            return self.add(name, False, exc.one_line())
        except OSError as exc:
            return self.add(name, False, f"{type(exc).__name__}: {exc}")
        return self.add(name, True, detail)

    def name(self, role: str) -> str:
        return f"ct-{self.run_id}-{role}"


def run_checks(
    record: BuildRecord,
    *,
    arm64: bool = True,
    report: Callable[[str], None] = print,
    healthy_timeout: float = 60.0,
    arm64_timeout: float = 180.0,
    run_id: str | None = None,
) -> list[Check]:
    """Every check, in order; ``GateError`` naming the failed ones. Containers and networks
    carry the label ``pipeline.build.containertest=<run_id>`` (random unless given)."""
    run = _Run(record, report, run_id)
    try:
        with tempfile.TemporaryDirectory(prefix="containertest-") as tmp:
            _gateway_checks(run, Path(tmp), healthy_timeout)
        _image_checks(run)
        if arm64 and "linux/arm64" in record.platforms:
            _arm64_check(run, arm64_timeout)
    finally:
        engine.remove_labelled(f"{LABEL_KEY}={run.run_id}")
    failed = [c.name for c in run.checks if not c.ok]
    if failed:
        raise GateError(
            f"docker.test failed {len(failed)} of {len(run.checks)} checks: {', '.join(failed)}",
            hint="see the FAIL lines above",
        )
    return run.checks


def _gateway_checks(run: _Run, tmp: Path, healthy_timeout: float) -> None:
    upstream, gateway = _start_pair(run, tmp)

    def healthy() -> str:
        seconds = engine.wait_healthy(gateway.id, healthy_timeout)
        return f"engine health status healthy after {seconds:.1f}s"

    if not run.attempt("healthy", healthy):
        tail = engine.logs(gateway.id).strip().splitlines()[-3:]
        if tail:
            run.report("  gateway log: " + " | ".join(tail))
    port = engine.host_port(gateway.id, f"{GATEWAY_PORT}/tcp")
    run.attempt("healthz", partial(_healthz, port))
    run.attempt("proxy", partial(_proxy, port))
    run.attempt("not-found", partial(_not_found, port))
    run.attempt("non-root", partial(_non_root, run.image, gateway.id))
    run.attempt("read-only", partial(_read_only, gateway.id))
    run.attempt("drain", lambda: _drain(gateway.id, upstream.id, port))


def _start_pair(run: _Run, tmp: Path) -> tuple[engine.Container, engine.Container]:
    """An upstream container and the gateway in front of it, on a user-defined network."""
    network = run.name("net")
    engine.create_network(network, run.labels)
    upstream = engine.run_container(
        run.image,
        ["-c", UPSTREAM_SCRIPT],
        name=run.name("upstream"),
        labels=run.labels,
        network=network,
        aliases=["upstream"],
        entrypoint="python",
        read_only=True,
        healthcheck=False,
    )
    config = tmp / "gateway.toml"
    config.write_text(gateway_config(f"http://upstream:{UPSTREAM_PORT}"), encoding="utf-8")
    config.chmod(0o644)
    gateway = engine.run_container(
        run.image,
        name=run.name("gateway"),
        labels=run.labels,
        network=network,
        read_only=True,
        tmpfs=["/tmp"],
        volumes=[(str(config), CONFIG_PATH, "ro")],
        publish=[("127.0.0.1:", GATEWAY_PORT)],
    )
    return upstream, gateway


def _healthz(port: int) -> str:
    answer = http_get(port, "/healthz")
    assert answer.status == 200, f"/healthz answered {answer.status}"
    return "/healthz 200"


def _proxy(port: int) -> str:
    answer = http_get(port, "/api/hello")
    assert answer.status == 200, f"/api/hello answered {answer.status}: {answer.body[:80]}"
    assert answer.body == "hello from upstream", f"unexpected body {answer.body[:80]!r}"
    return "/api/hello -> upstream container on a user-defined network"


def _not_found(port: int) -> str:
    answer = http_get(port, "/no-such-route")
    assert answer.status == 404, f"/no-such-route answered {answer.status}, not 404"
    assert "upstream" not in answer.body, "the 404 came from the upstream"
    return "/no-such-route 404 from the gateway"


def _non_root(image: str, container: str) -> str:
    user = engine.image_user(image)
    code, out = engine.exec_in(container, ["python", "-c", "import os; print(os.getuid())"])
    assert code == 0, f"exec failed: {out.strip()[:120]}"
    uid = out.strip()
    assert uid.isdigit() and uid != "0", f"runs as uid {uid}"
    assert user and user.split(":")[0] not in ("0", "root"), f"image USER is {user!r}"
    return f"uid {uid} (USER {user})"


def _read_only(container: str) -> str:
    code, out = engine.exec_in(container, ["python", "-c", "open('/app/probe', 'w')"])
    assert code != 0, "the root filesystem is writable"
    assert "Read-only file system" in out, f"unexpected error: {out.strip()[-120:]}"
    code, out = engine.exec_in(container, ["python", "-c", "open('/tmp/probe', 'w')"])
    assert code == 0, f"/tmp (tmpfs) is not writable: {out.strip()[-120:]}"
    return "--read-only root, tmpfs /tmp, and serving"


def _drain(gateway: str, upstream: str, port: int) -> str:
    """A request in flight when SIGTERM arrives completes; then the process exits 0."""
    result: dict[str, Response | BaseException] = {}

    def request() -> None:
        try:
            result["answer"] = http_get(port, "/api/slow", timeout=30)
        except BaseException as exc:  # reported below
            result["answer"] = exc

    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    deadline = time.monotonic() + 10
    while "slow request started" not in engine.logs(upstream):
        assert time.monotonic() < deadline, "the slow request never reached the upstream"
        time.sleep(0.05)
    started = time.monotonic()
    engine.stop(gateway, timeout=30)
    stopped = time.monotonic() - started
    worker.join(timeout=30)
    answer = result.get("answer")
    assert isinstance(answer, Response), f"the in-flight request failed: {answer!r}"
    assert answer.status == 200, f"the in-flight request got {answer.status}"
    assert answer.body == "slow answer from upstream", f"unexpected body {answer.body[:80]!r}"
    state = engine.container_state(gateway)
    assert state["exit_code"] == 0, f"exit code {state['exit_code']} after SIGTERM"
    return f"in-flight request answered 200, exit 0 after {stopped:.1f}s"


def _image_checks(run: _Run) -> None:
    def labels() -> str:
        actual = engine.image_labels(run.image)
        missing = missing_labels(run.record.labels, actual)
        assert not missing, f"missing or different: {', '.join(missing)}"
        return f"{sum(k.startswith(LABEL) for k in actual)} OCI labels incl. base.name/digest"

    def no_build_tools() -> str:
        out = engine.run_once(
            run.image,
            ["-c", INVENTORY_SCRIPT],
            entrypoint="python",
            user="0",
            labels=run.labels,
        )
        problems = inventory_problems(json.loads(out.strip().splitlines()[-1]))
        assert not problems, "; ".join(problems[:5])
        return "no uv, pip/uv caches, compilers or .git"

    run.attempt("labels", labels)
    run.attempt("no-build-tools", no_build_tools)


def _arm64_check(run: _Run, timeout: float) -> None:
    def arm64() -> str:
        container = engine.run_container(
            run.image,
            name=run.name("arm64"),
            labels=run.labels,
            platform="linux/arm64",
            read_only=True,
            tmpfs=["/tmp"],
        )
        code, arch = engine.exec_in(container.id, ["uname", "-m"])
        seconds = engine.wait_healthy(container.id, timeout)
        assert code == 0 and arch.strip() == "aarch64", f"uname -m says {arch.strip()!r}"
        return f"aarch64 under QEMU, healthy after {seconds:.1f}s"

    run.attempt("arm64", arm64)


def run_record(
    record_path: Path, *, arm64: bool = True, report: Callable[[str], None] = print
) -> None:
    """``docker.test``: the checks on the image of the build record at ``record_path``."""
    run_checks(BuildRecord.read(record_path), arm64=arm64, report=report)
