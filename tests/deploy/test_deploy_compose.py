"""The local environment: docker/compose.yaml, its variables, and deploy.local / deploy.down
against the real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load as load_gateway_config
from pipeline.deploy import compose
from pipeline.engine import leftovers
from pipeline.errors import UsageError
from tests.conftest import ROOT

COMPOSE_FILE = ROOT / "docker" / "compose.yaml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=two words\n", {"A": "1", "B": "two words"}),
        ("# comment\n\nexport A=1\n", {"A": "1"}),
        ("A='quoted # not a comment'\nB=\"x\"\n", {"A": "quoted # not a comment", "B": "x"}),
        ("A=value # trailing comment\n", {"A": "value"}),
        ("A=\n", {"A": ""}),
        ("A=1\nA=2\n", {"A": "2"}),
    ],
)
def test_env_files_are_read_as_compose_reads_them(text: str, expected: dict[str, str]) -> None:
    assert compose.parse_env(text) == expected


def test_a_line_without_key_and_value_is_an_error_naming_the_line() -> None:
    with pytest.raises(UsageError, match=r"^\.env\.local:2: expected KEY=VALUE$"):
        compose.parse_env("A=1\nnot a pair\n", source=".env.local")


def test_env_example_documents_exactly_the_variables_compose_yaml_uses() -> None:
    used = compose.compose_variables(COMPOSE_FILE.read_text(encoding="utf-8"))
    documented = compose.read_env_file(ROOT / ".env.example")
    assert sorted(documented) == sorted(used)


def test_env_local_is_never_committed() -> None:
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env.local" in ignored


@pytest.mark.parametrize(
    ("env_file", "overrides", "image", "expected"),
    [
        ({}, {}, "img:1", {"GATEWAY_IMAGE": "img:1"}),
        ({"GATEWAY_PORT": "9000"}, {"GATEWAY_PORT": ""}, "i", {"GATEWAY_PORT": "9000"}),
        ({"GATEWAY_PORT": "9000"}, {"GATEWAY_PORT": "0"}, "i", {"GATEWAY_PORT": "0"}),
        ({"GATEWAY_IMAGE": "local:env"}, {}, "flag:1", {"GATEWAY_IMAGE": "flag:1"}),
        ({"COMPOSE_PROFILES": "x"}, {}, "i", {"COMPOSE_PROFILES": "x"}),
    ],
)
def test_flags_override_env_local_and_the_image_is_final(
    env_file: dict[str, str], overrides: dict[str, str], image: str, expected: dict[str, str]
) -> None:
    documented = ["GATEWAY_IMAGE", "GATEWAY_PORT"]
    values = compose.variables_for(
        image=image, env_file=env_file, overrides=overrides, documented=documented
    )
    assert values == {"GATEWAY_IMAGE": image, **expected}


def test_an_undocumented_variable_in_env_local_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown variable GATEWAY_PROT"):
        compose.variables_for(
            image="i",
            env_file={"GATEWAY_PROT": "1"},
            overrides={},
            documented=["GATEWAY_IMAGE", "GATEWAY_PORT"],
        )


def test_a_stack_reads_the_checkouts_env_files_and_takes_the_port_and_image(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env.example").write_text("GATEWAY_IMAGE=\nGATEWAY_PORT=8080\nUPSTREAM_NAME=\n")
    (tmp_path / ".env.local").write_text("GATEWAY_PORT=9000\nUPSTREAM_NAME=orders\n")
    stack = compose.stack_for(
        tmp_path, image="gw:1", environ={"HOME": "/h"}, project="demo", port="0"
    )
    assert stack == compose.Stack(
        "demo",
        tmp_path / "docker" / "compose.yaml",
        {"GATEWAY_PORT": "0", "UPSTREAM_NAME": "orders", "GATEWAY_IMAGE": "gw:1"},
        {"HOME": "/h"},
    )
    assert compose.stack_for(tmp_path, image="gw:1", environ={}).project == compose.PROJECT


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (compose.Answer("http://g/api", 200, {"service": "orders"}), ""),
        (compose.Answer("http://g/api", 502, {"service": "orders"}), "answered 502"),
        (compose.Answer("http://g/api", 200, {"service": "other"}), "but not from orders"),
    ],
)
def test_only_an_answer_from_the_stacks_upstream_passes(answer: compose.Answer, error: str) -> None:
    stack = compose.Stack("demo", Path("c.yaml"), {"UPSTREAM_NAME": "orders"}, {})
    if not error:
        assert compose.check_answer(stack, answer) == "orders"
        return
    with pytest.raises(compose.LocalEnvError, match=error) as caught:
        compose.check_answer(stack, answer)
    assert caught.value.hint == "inspect with docker compose -p demo logs"


@pytest.mark.parametrize("name", ["Api", "a b", "-x", "", "a/b"])
def test_a_project_name_compose_would_reject_is_refused(name: str) -> None:
    with pytest.raises(UsageError):
        compose.check_project(name)


def _compose_config(**variables: str) -> dict[str, Any]:
    done = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_both_services_run_read_only_non_root_without_capabilities() -> None:
    services = _compose_config(GATEWAY_IMAGE="gw:test")["services"]
    for name in ("gateway", "upstream"):
        service = services[name]
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
    assert services["gateway"]["tmpfs"] == ["/tmp:size=16m,mode=1777"]
    assert services["upstream"]["tmpfs"] == ["/tmp:size=8m,mode=1777"]
    assert services["gateway"]["user"] == "10001:10001"
    assert "user" not in services["upstream"]  # its image says USER 65534:65534
    upstream_dockerfile = (ROOT / "docker" / "upstream" / "Dockerfile").read_text()
    assert "USER 65534:65534" in upstream_dockerfile.splitlines()


def test_the_gateway_is_published_on_loopback_with_its_config_mounted_read_only() -> None:
    gateway = _compose_config(GATEWAY_IMAGE="gw:test")["services"]["gateway"]
    assert gateway["image"] == "gw:test"
    assert [(p["host_ip"], p["published"], p["target"]) for p in gateway["ports"]] == [
        ("127.0.0.1", "8080", 8080)
    ]
    (volume,) = gateway["volumes"]
    assert (volume["source"], volume["target"], volume["read_only"]) == (
        str(ROOT / "docker" / "gateway.compose.toml"),
        "/etc/gateway/gateway.toml",
        True,
    )
    assert gateway["healthcheck"]["test"] == ["CMD", "python", "-m", "gateway.healthcheck"]
    assert gateway["depends_on"]["upstream"]["condition"] == "service_healthy"


def test_both_services_restart_unless_stopped_within_cpu_and_memory_limits() -> None:
    services = _compose_config(GATEWAY_IMAGE="gw:test")["services"]
    assert {
        name: (service["restart"], service["deploy"]["resources"]["limits"])
        for name, service in services.items()
    } == {
        "gateway": ("unless-stopped", {"cpus": 1.0, "memory": str(256 * 2**20)}),
        "upstream": ("unless-stopped", {"cpus": 0.5, "memory": str(128 * 2**20)}),
    }


def test_the_upstream_is_only_reachable_inside_the_stack() -> None:
    config = _compose_config(GATEWAY_IMAGE="gw:test")
    assert "ports" not in config["services"]["upstream"]
    assert config["networks"]["backend"]["internal"] is True
    assert sorted(config["services"]["upstream"]["networks"]) == ["backend"]


def test_compose_refuses_to_start_without_an_image() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_IMAGE"}
    done = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "set GATEWAY_IMAGE" in done.stderr


def test_the_compose_gateway_config_routes_api_to_the_upstream_service() -> None:
    config = load_gateway_config(str(ROOT / "docker" / "gateway.compose.toml"))
    (route,) = config.routes
    assert (route.path, route.strip_prefix) == ("/api", True)
    assert [t.label for t in route.upstream.targets] == ["upstream:8080"]
    assert dict(route.request_headers.add) == {"X-Gateway": "api-gateway-local"}


def _invoke(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def project() -> Iterator[str]:
    """A compose project name no one else uses; taken down whatever the test did."""
    name = f"test-local-{uuid.uuid4().hex[:8]}"
    yield name
    env = {**os.environ, "GATEWAY_IMAGE": compose.UNUSED_IMAGE}
    subprocess.run(
        ["docker", "compose", "-p", name, "-f", str(COMPOSE_FILE), "down", "-v", "--rmi", "local"],
        env=env,
        capture_output=True,
        check=False,
    )


@pytest.mark.engine
def test_deploy_local_answers_through_the_gateway_and_deploy_down_removes_it_all(
    project: str,
) -> None:
    up = _invoke("deploy.local", "--project", project, "--port", "0")
    assert up.returncode == 0, up.stderr
    lines = up.stdout.strip().splitlines()
    url = lines[-3].split()[1]
    assert url.startswith("http://127.0.0.1:")
    assert lines[-2] == (
        f"request: GET {url}/api/hello?from=deploy.local -> 200 from sample-upstream"
        " (upstream saw GET /hello?from=deploy.local, x-gateway: api-gateway-local)"
    )
    assert lines[-1] == f"stop with: invoke deploy.down --project {project}"
    # The upstream itself logged the request the gateway forwarded.
    upstream_log = subprocess.run(
        [
            "docker",
            "compose",
            "-p",
            project,
            "-f",
            str(COMPOSE_FILE),
            "logs",
            "--no-color",
            "--no-log-prefix",
            "upstream",
        ],
        env={**os.environ, "GATEWAY_IMAGE": compose.UNUSED_IMAGE},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "GET /hello?from=deploy.local 200" in upstream_log
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        assert response.status == 200
    assert _docker(
        "ps", "--filter", f"label=com.docker.compose.project={project}", "--format", "{{.Names}}"
    ).split() == [f"{project}-gateway-1", f"{project}-upstream-1"]

    down = _invoke("deploy.down", "--project", project, timeout=300)
    assert (down.returncode, down.stdout.strip()) == (0, f"removed: compose project {project}")
    assert leftovers(project) == []
    assert _docker("images", "--quiet", f"{project}-upstream") == ""


def _state(container: str) -> tuple[int, str]:
    """The container's restart count and health status."""
    restarts, health = _docker(
        "inspect", "--format", "{{.RestartCount}} {{.State.Health.Status}}", container
    ).split()
    return int(restarts), health


def _crash(container: str) -> None:
    """SIGKILL the container's main process, as a crash or the kernel's OOM killer would.
    Not `docker kill`: Docker counts that as a deliberate stop and never restarts it."""
    pid = int(_docker("inspect", "--format", "{{.State.Pid}}", container))
    assert pid > 0 and Path(f"/proc/{pid}").exists(), (
        f"{container}: its process {pid} is not visible here (the engine runs in another"
        " PID namespace)"
    )
    os.kill(pid, signal.SIGKILL)


@pytest.mark.engine
def test_deploy_local_containers_come_back_healthy_after_a_crash(project: str) -> None:
    up = _invoke("deploy.local", "--project", project, "--port", "0")
    assert up.returncode == 0, up.stderr
    for service in ("upstream", "gateway"):
        container = f"{project}-{service}-1"
        assert _state(container) == (0, "healthy")
        _crash(container)
        deadline = time.monotonic() + 60
        while _state(container) != (1, "healthy") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _state(container) == (1, "healthy"), service
    # And the stack answers through the gateway again (the host port may be a new one).
    address = _docker("port", f"{project}-gateway-1", "8080/tcp").splitlines()[0]
    with urllib.request.urlopen(f"http://{address}/api/hello", timeout=5) as response:
        assert response.status == 200


@pytest.mark.engine
def test_deploy_local_refuses_an_image_missing_from_the_local_store(project: str) -> None:
    done = _invoke("deploy.local", "--project", project, "--image", "no-such/image:404")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: image no-such/image:404 is not in the local image store: docker pull it,"
        " or leave out --image to use the built image"
    )
    assert leftovers(project) == []


@pytest.mark.engine
def test_deploy_down_of_a_project_that_never_ran_succeeds_and_leaves_nothing(
    project: str,
) -> None:
    done = _invoke("deploy.down", "--project", project, timeout=300)
    assert (done.returncode, done.stdout.strip()) == (0, f"removed: compose project {project}")


def test_the_sample_upstream_context_holds_only_its_app(tmp_path: Path) -> None:
    ignore = (ROOT / "docker" / "upstream" / ".dockerignore").read_text().split()
    assert ignore == ["*", "!app.py"]
