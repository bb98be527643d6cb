"""The local environment: ``docker/compose.yaml`` (the gateway in front of a sample upstream)
under one compose project name, so ``down`` removes exactly what ``up`` started."""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.errors import EngineError, PipelineError, UsageError

PROJECT = "api-gateway-local"
GATEWAY = "gateway"
UPSTREAM = "upstream"
CONTAINER_PORT = 8080
#: What ``down`` needs to interpolate the file when no image is known (it finds the containers
#: by the project label; the value is never run).
UNUSED_IMAGE = "unused.invalid/down:only"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class LocalEnvError(EngineError):
    """The local environment did not come up healthy, or did not answer through the gateway."""


def parse_env(text: str, *, source: str = ".env") -> dict[str, str]:
    """``KEY=VALUE`` lines as compose reads them: ``#`` comments, blank lines, optional
    ``export``, single or double quotes around the value; anything else is an error."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise UsageError(f"{source}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file; a missing file has none."""
    try:
        return parse_env(path.read_text(encoding="utf-8"), source=str(path))
    except FileNotFoundError:
        return {}


def compose_variables(text: str) -> set[str]:
    """Every ``${VAR...}`` the compose file interpolates."""
    return set(_VARIABLE.findall(text))


def check_project(name: str) -> str:
    if not _PROJECT.match(name):
        raise UsageError(
            f"--project {name!r}: lower-case letters, digits, '-' and '_' only",
            hint="e.g. api-gateway-local",
        )
    return name


@dataclass(frozen=True)
class Stack:
    """One compose project: its name, file and the variables it interpolates."""

    project: str
    file: Path
    variables: Mapping[str, str]
    environ: Mapping[str, str]

    def compose(self, *args: str, **kwargs: Any) -> str:
        """``docker compose`` for this project (through ``pipeline.engine``)."""
        from pipeline.engine.compose import run_compose

        return run_compose(self.project, self.file, *args, env=self.env, **kwargs)

    @property
    def env(self) -> dict[str, str]:
        """The process environment for compose: the caller's, then the stack's variables (the
        shell environment wins over env files in compose, so these are final)."""
        return {**self.environ, **self.variables}


@dataclass(frozen=True)
class Answer:
    url: str
    status: int
    body: dict[str, Any]


def up(stack: Stack, *, wait_s: int = 120) -> None:
    """Build the upstream, start both services and wait until they are healthy. A stack that
    does not come up is taken down again (nothing half-started); the error carries the end of
    its logs."""
    try:
        stack.compose(
            "up",
            "--detach",
            "--build",
            "--wait",
            "--wait-timeout",
            str(wait_s),
            error=LocalEnvError,
            what=f"docker compose up ({stack.project})",
            timeout=wait_s + 600,
        )
    except PipelineError as exc:
        logs = ""
        with contextlib.suppress(PipelineError):
            logs = stack.compose("logs", "--no-color", "--tail", "20", timeout=60)
        down(stack)
        detail = _last_lines(logs, 5)
        raise LocalEnvError(
            f"{exc.one_line()}" + (f"; last log lines: {detail}" if detail else ""),
            hint="fix the cause, then `invoke deploy.local` again (the stack was removed)",
        ) from None


def published_url(stack: Stack) -> str:
    """``http://HOST:PORT`` where the gateway's container port is published."""
    out = stack.compose(
        "port",
        GATEWAY,
        str(CONTAINER_PORT),
        error=LocalEnvError,
        what="docker compose port",
        timeout=60,
    )
    address = out.strip().splitlines()[0] if out.strip() else ""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise LocalEnvError(f"the gateway publishes no port (docker compose port: {address!r})")
    if host in ("0.0.0.0", "", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def request(url: str, *, attempts: int = 10, delay_s: float = 0.5, timeout_s: float = 5) -> Answer:
    """GET ``url``; retried briefly while the gateway warms up. Returns the status and the JSON
    body (the sample upstream echoes what it received)."""
    last = ""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                raw = response.read()
                status = int(response.status)
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"raw": raw.decode("utf-8", "replace")[:200]}
            if not isinstance(body, dict):
                body = {"raw": body}
            return Answer(url=url, status=status, body=body)
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code not in (502, 503, 504):
                break
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if attempt + 1 < attempts:
            time.sleep(delay_s)
    raise LocalEnvError(f"no answer through the gateway at {url} ({last})")


def logs(stack: Stack, service: str) -> str:
    return stack.compose(
        "logs", "--no-color", "--no-log-prefix", service, error=LocalEnvError, timeout=60
    )


def down(stack: Stack) -> None:
    """Remove the project's containers, networks, volumes and the images it built."""
    stack.compose(
        "down",
        "--volumes",
        "--remove-orphans",
        "--rmi",
        "local",
        "--timeout",
        "20",
        error=EngineError,
        what=f"docker compose down ({stack.project})",
        timeout=180,
    )


def _last_lines(text: str, count: int) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def variables_for(
    *,
    image: str,
    env_file: Mapping[str, str],
    overrides: Mapping[str, str],
    documented: Sequence[str] | None = None,
) -> dict[str, str]:
    """The stack's variables: ``.env.local``, then flags, and the image as resolved by the
    caller. Unknown keys (not in ``documented``) are refused, so a typo is not silently
    ignored."""
    values = {**env_file, **{k: v for k, v in overrides.items() if v != ""}}
    if image:
        values["GATEWAY_IMAGE"] = image
    if documented is not None:
        unknown = sorted(k for k in set(values) - set(documented) if not k.startswith("COMPOSE_"))
        if unknown:
            raise UsageError(
                f"unknown variable {unknown[0]} for the local environment",
                hint="see .env.example for the variables docker/compose.yaml uses",
            )
    return values


def stack_for(
    root: Path,
    *,
    image: str,
    environ: Mapping[str, str],
    project: str = "",
    port: str = "",
    compose_file: str = "docker/compose.yaml",
) -> Stack:
    """The local stack of the checkout at ``root``: its compose file, ``.env.local`` (checked
    against the variables ``.env.example`` documents), then ``port`` and ``image``."""
    documented = read_env_file(root / ".env.example")
    variables = variables_for(
        image=image,
        env_file=read_env_file(root / ".env.local"),
        overrides={"GATEWAY_PORT": port},
        documented=list(documented),
    )
    return Stack(check_project(project or PROJECT), root / compose_file, variables, dict(environ))


def check_answer(stack: Stack, answer: Answer) -> str:
    """The upstream's name when it answered the request through the gateway; else an error."""
    upstream = stack.variables.get("UPSTREAM_NAME", "sample-upstream")
    if answer.status != 200 or answer.body.get("service") != upstream:
        raise LocalEnvError(
            f"{answer.url} answered {answer.status} but not from {upstream}",
            hint=f"inspect with docker compose -p {stack.project} logs",
        )
    return upstream


@dataclass(frozen=True)
class LocalRequest:
    """The flags of ``deploy.local``."""

    image: str | None = None
    project: str | None = None
    port: int | None = None
    wait: int = 120
    build: bool = True


def deploy_local(
    req: LocalRequest,
    *,
    root: Path,
    settings: Settings,
    environ: Mapping[str, str],
    build_image: Callable[[], None],
) -> list[str]:
    """The gateway and a sample upstream up and healthy, one request through the gateway
    checked; the lines to print. ``build_image`` runs ``docker.build`` when nothing is."""
    from pipeline.engine import image_exists

    ref = req.image or read_env_file(root / ".env.local").get("GATEWAY_IMAGE", "")
    if not ref:
        ref = recorded_image(Path(settings.record), build=req.build, build_image=build_image)
    elif not image_exists(ref):
        raise UsageError(
            f"image {ref} is not in the local image store",
            hint="docker pull it, or leave out --image to use the built image",
        )
    stack = settings_stack(root, settings, environ, req.project, ref, req.port)
    up(stack, wait_s=req.wait)
    url = published_url(stack)
    answer = request(f"{url}/api/hello?from=deploy.local")
    upstream = check_answer(stack, answer)
    seen = answer.body
    return [
        f"gateway: {url}  (project {stack.project}, image {ref})",
        f"request: GET {answer.url} -> {answer.status} from {upstream}"
        f" (upstream saw {seen.get('method')} {seen.get('path')},"
        f" x-gateway: {seen.get('headers', {}).get('x-gateway', '-')})",
        f"stop with: invoke deploy.down --project {stack.project}",
    ]


def recorded_image(record_path: Path, *, build: bool, build_image: Callable[[], None]) -> str:
    """The image ``docker.build`` recorded and loaded; built first when there is none."""
    from pipeline.build.record import BuildRecord
    from pipeline.engine import image_exists

    with contextlib.suppress(UsageError):
        record = BuildRecord.read(record_path)
        if record.loaded and image_exists(record.reference):
            return record.reference
    if not build:
        raise UsageError(
            f"no loaded image recorded in {record_path}",
            hint="run `invoke docker.build`, or pass --image REF",
        )
    print("deploy.local: no local image recorded yet: running docker.build", flush=True)
    build_image()
    record = BuildRecord.read(record_path)
    if not (record.loaded and image_exists(record.reference)):
        raise UsageError(f"docker.build did not load {record.reference} into the local store")
    return record.reference


def settings_stack(
    root: Path,
    settings: Settings,
    environ: Mapping[str, str],
    project: str | None,
    image: str,
    port: int | None = None,
) -> Stack:
    """``stack_for`` with the compose file and project from ``[tool.pipeline]``."""
    return stack_for(
        root,
        image=image,
        environ=environ,
        project=project or settings.path_or_name("compose_project", PROJECT),
        port=str(port) if port is not None else "",
        compose_file=settings.path_or_name("compose_file", "docker/compose.yaml"),
    )


def deploy_down(
    project: str | None, *, root: Path, settings: Settings, environ: Mapping[str, str]
) -> str:
    """Remove everything ``deploy.local`` started; the line to print."""
    from pipeline.engine import leftovers

    stack = settings_stack(root, settings, environ, project, UNUSED_IMAGE)
    down(stack)
    left = leftovers(stack.project)
    if left:
        raise EngineError(f"{stack.project}: still present after down: {', '.join(left)}")
    return f"removed: compose project {stack.project}"
