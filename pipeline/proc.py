"""Running external commands: argv lists only, never shell strings. Failures become
``CommandError`` carrying the command and its stderr."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from pipeline.children import StalledError, run_child
from pipeline.errors import CommandError


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    idle: float | None = None,
    error: type[CommandError] = CommandError,
    what: str = "",
    hint: str = "",
    ok: Collection[int] = (0,),
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``, capture its output, and raise ``error`` if it fails (an exit code not in
    ``ok``: ``kubectl diff`` says "differences" with 1). ``input`` goes to stdin: the way
    secrets reach a command (never argv). The command dies with the task
    (``pipeline.children``); ``idle``: no output for that long is a stall, stopped and said."""
    try:
        done = run_child(argv, input=input, env=env, cwd=cwd, timeout=timeout, idle=idle)
    except FileNotFoundError:
        raise error(
            f"{argv[0]} is not installed", argv=argv, hint=hint or f"install {argv[0]}"
        ) from None
    except StalledError as exc:
        raise error(
            f"{what or ' '.join(argv[:2])} stalled: no progress for {exc.idle:g}s (timed out)",
            argv=argv,
            hint=hint,
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise error(
            f"{what or argv[0]} timed out after {timeout:g}s", argv=argv, hint=hint
        ) from exc
    if done.returncode not in ok:
        raise error(
            f"{what or ' '.join(argv[:2])} failed with exit code {done.returncode}",
            argv=argv,
            returncode=done.returncode,
            stderr=done.stderr or done.stdout,
            hint=hint,
        )
    return done


def find_tool(name: str, bin_dir: Path | None = None) -> str:
    """The one tool lookup: ``name`` in ``bin_dir`` (default: this interpreter's environment,
    where ``uv sync`` installs the scanners and linters) when it is there, else ``name`` for
    ``PATH``."""
    candidate = (bin_dir or Path(sys.executable).parent) / name
    return str(candidate) if candidate.exists() else name


def stream(argv: Sequence[str], *, cwd: Path | None = None) -> int:
    """Run ``argv`` with its output going straight to the terminal; return its exit code."""
    sys.stdout.flush()
    try:
        return subprocess.run(list(argv), cwd=cwd, check=False).returncode
    except FileNotFoundError:
        raise CommandError(f"{argv[0]} is not installed", argv=argv) from None


class CheckFailed(CommandError):
    """A step of ``invoke test`` failed: the edge exits with the step's own exit code."""

    def __init__(self, message: str, *, returncode: int) -> None:
        super().__init__(message, returncode=returncode)
        self.exit_code = returncode


def check_steps(
    root: Path, *, engine: bool = True, k: str | None = None, path: str = "tests", lint: bool = True
) -> None:
    """``invoke test``: ruff, ruff format --check and mypy (``lint``), then pytest (without the
    engine tests unless ``engine``), output streamed; the first failing step stops the run."""
    steps: list[list[str]] = []
    if lint:
        steps += [
            [sys.executable, "-m", "ruff", "check", "."],
            [sys.executable, "-m", "ruff", "format", "--check", "."],
            [sys.executable, "-m", "mypy"],
        ]
    pytest = [sys.executable, "-m", "pytest", path]
    pytest += [] if engine else ["-m", "not engine"]
    pytest += ["-k", k] if k else []
    for argv in [*steps, pytest]:
        code = stream(argv, cwd=root)
        if code != 0:
            raise CheckFailed(f"{' '.join(argv[2:4])} failed (exit code {code})", returncode=code)
