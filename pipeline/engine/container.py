"""Containers and networks: run, wait healthy, exec, logs, stop, clean up by label."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from python_on_whales import DockerClient, DockerException

from pipeline.engine.cli import docker, fail, stderr_of
from pipeline.errors import EngineError


@dataclass(frozen=True)
class Container:
    id: str
    name: str


def create_network(name: str, labels: Mapping[str, str], client: DockerClient | None = None) -> str:
    client = client or docker()
    try:
        return str(client.network.create(name, labels=dict(labels)).id)
    except DockerException as exc:
        raise fail(exc, f"cannot create network {name}") from None


def run_container(
    image: str,
    command: Sequence[str] = (),
    *,
    name: str,
    labels: Mapping[str, str],
    network: str | None = None,
    aliases: Sequence[str] = (),
    entrypoint: str | None = None,
    read_only: bool = False,
    tmpfs: Sequence[str] = (),
    volumes: Sequence[tuple[str, str, str]] = (),
    publish: Sequence[tuple[str, int]] = (),
    platform: str | None = None,
    user: str | None = None,
    envs: Mapping[str, str] | None = None,
    pull: str = "missing",
    healthcheck: bool = True,
    client: DockerClient | None = None,
) -> Container:
    """Start a detached container (``pull``: missing, never or always)."""
    client = client or docker()
    kwargs: dict[str, Any] = {
        "detach": True,
        "name": name,
        "labels": dict(labels),
        "read_only": read_only,
        "tmpfs": list(tmpfs),
        "volumes": list(volumes),
        "publish": [(host, port) for host, port in publish],
        "pull": pull,
        "healthcheck": healthcheck,
        "envs": dict(envs or {}),
    }
    if network:
        kwargs["networks"] = [network]
        kwargs["network_aliases"] = list(aliases)
    if entrypoint is not None:
        kwargs["entrypoint"] = entrypoint
    if platform:
        kwargs["platform"] = platform
    if user:
        kwargs["user"] = user
    try:
        container = client.run(image, list(command), **kwargs)
    except DockerException as exc:
        raise fail(exc, f"cannot start a container of {image}") from None
    return Container(id=str(getattr(container, "id", container)), name=name)


def run_once(
    image: str,
    command: Sequence[str],
    *,
    entrypoint: str | None = None,
    user: str | None = None,
    platform: str | None = None,
    labels: Mapping[str, str] | None = None,
    client: DockerClient | None = None,
) -> str:
    """Run a container to completion (``--rm``) and return its output."""
    client = client or docker()
    kwargs: dict[str, Any] = {"remove": True, "pull": "missing", "labels": dict(labels or {})}
    if entrypoint is not None:
        kwargs["entrypoint"] = entrypoint
    if user:
        kwargs["user"] = user
    if platform:
        kwargs["platform"] = platform
    try:
        return str(client.run(image, list(command), **kwargs))
    except DockerException as exc:
        raise fail(exc, f"a container of {image} failed") from None


def container_state(container: str, client: DockerClient | None = None) -> dict[str, Any]:
    """``running``, ``status``, ``exit_code`` and ``health`` (None without a HEALTHCHECK)."""
    client = client or docker()
    try:
        state = client.container.inspect(container).state
    except DockerException as exc:
        raise fail(exc, f"cannot inspect container {container}") from None
    health = state.health.status if state.health is not None else None
    return {
        "running": bool(state.running),
        "status": str(state.status or ""),
        "exit_code": state.exit_code,
        "health": str(health) if health is not None else None,
    }


def wait_healthy(container: str, timeout: float, client: DockerClient | None = None) -> float:
    """Seconds until the engine reports the container healthy; ``EngineError`` if it exits,
    turns unhealthy or ``timeout`` passes."""
    client = client or docker()
    start = time.monotonic()
    while True:
        state = container_state(container, client)
        if state["health"] == "healthy":
            return time.monotonic() - start
        if not state["running"]:
            raise EngineError(f"container exited with code {state['exit_code']} before healthy")
        if state["health"] == "unhealthy":
            raise EngineError("the engine reports the container unhealthy")
        if time.monotonic() - start > timeout:
            raise EngineError(f"not healthy after {timeout:g}s (health: {state['health']})")
        time.sleep(0.1)


def host_port(container: str, port: str, client: DockerClient | None = None) -> int:
    """The host port a container port (``8080/tcp``) is published on."""
    client = client or docker()
    try:
        ports = client.container.inspect(container).network_settings.ports or {}
    except DockerException as exc:
        raise fail(exc, f"cannot inspect container {container}") from None
    for binding in ports.get(port) or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    raise EngineError(f"container {container} does not publish {port}")


def exec_in(
    container: str, command: Sequence[str], client: DockerClient | None = None
) -> tuple[int, str]:
    """Run ``command`` in a running container: (exit code, stdout+stderr)."""
    client = client or docker()
    try:
        out = client.container.execute(container, list(command))
    except DockerException as exc:
        return exc.return_code, stderr_of(exc)
    return 0, str(out or "")


def logs(container: str, client: DockerClient | None = None) -> str:
    client = client or docker()
    try:
        return str(client.container.logs(container))
    except DockerException:
        return ""


def stop(container: str, timeout: int = 30, client: DockerClient | None = None) -> None:
    """``docker stop``: the image's STOPSIGNAL, then SIGKILL after ``timeout`` seconds."""
    client = client or docker()
    try:
        client.container.stop(container, time=timeout)
    except DockerException as exc:
        raise fail(exc, f"cannot stop container {container}") from None


def remove_labelled(label: str, client: DockerClient | None = None) -> list[str]:
    """Remove every container, then every network, carrying ``label`` (key=value): what was
    removed. Never raises for something already gone."""
    client = client or docker()
    removed: list[str] = []
    try:
        containers = client.container.list(all=True, filters=[("label", label)])
    except DockerException:
        containers = []
    for container in containers:
        try:
            client.container.remove(container, force=True, volumes=True)
            removed.append(str(container.name))
        except DockerException:
            pass
    try:
        networks = client.network.list(filters=[("label", label)])
    except DockerException:
        networks = []
    for network in networks:
        try:
            client.network.remove(network)
            removed.append(str(network.name))
        except DockerException:
            pass
    return removed
