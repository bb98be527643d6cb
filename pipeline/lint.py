"""Linting the CI definitions and the Dockerfile: actionlint, zizmor (offline), check-jsonschema
with its builtin GitHub schemas, and hadolint. Each linter is one argv; every one runs, and the
result says which failed and why (their own output, untouched)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CommandError, LintError
from pipeline.proc import find_tool

# check-jsonschema's builtin schema for each kind of file.
SCHEMAS = {
    "workflow": "vendor.github-workflows",
    "action": "vendor.github-actions",
    "dependabot": "vendor.dependabot",
}


@dataclass(frozen=True)
class Targets:
    """The files one ``lint.actions`` run checks."""

    workflows: tuple[Path, ...]
    actions: tuple[Path, ...]
    dependabot: Path | None
    zizmor_config: Path | None = None

    @property
    def all(self) -> tuple[Path, ...]:
        extra = (self.dependabot,) if self.dependabot else ()
        return (*self.workflows, *self.actions, *extra)


@dataclass(frozen=True)
class Check:
    """One linter invocation: a name for the report, and its argv."""

    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What one linter said."""

    check: Check
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def find_targets(root: Path) -> Targets:
    """Every workflow under ``.github/workflows``, every ``actions/*/action.yml`` and the
    Dependabot configuration, relative to ``root``."""
    workflows = sorted(
        p.relative_to(root)
        for pattern in ("*.yml", "*.yaml")
        for p in (root / ".github" / "workflows").glob(pattern)
    )
    actions = sorted(
        p.relative_to(root)
        for pattern in ("*/action.yml", "*/action.yaml")
        for p in (root / "actions").glob(pattern)
    )
    dependabot = next(
        (
            p.relative_to(root)
            for p in (root / ".github" / "dependabot.yml", root / ".github" / "dependabot.yaml")
            if p.is_file()
        ),
        None,
    )
    config = root / ".github" / "zizmor.yml"
    return Targets(
        tuple(workflows),
        tuple(actions),
        dependabot,
        config.relative_to(root) if config.is_file() else None,
    )


def action_checks(targets: Targets, tool: Callable[[str], str] = find_tool) -> list[Check]:
    """The argvs of ``lint.actions``. ``tool`` maps a program name to the path to run."""
    if not targets.workflows and not targets.actions:
        raise LintError(
            "no workflows or actions to lint",
            hint="expected .github/workflows/*.yml or actions/*/action.yml",
        )
    checks: list[Check] = []
    if targets.workflows:
        # actionlint reads the local actions the workflows use (./actions/...) as well.
        checks.append(
            Check(
                "actionlint",
                (tool("actionlint"), "-oneline", "-no-color", *map(str, targets.workflows)),
            )
        )
    config = ("--config", str(targets.zizmor_config)) if targets.zizmor_config else ("--no-config",)
    checks.append(
        Check(
            "zizmor",
            (
                tool("zizmor"),
                "--offline",
                "--no-progress",
                "--format",
                "plain",
                *config,
                *map(str, targets.all),
            ),
        )
    )
    for kind, files in (
        ("workflow", targets.workflows),
        ("action", targets.actions),
        ("dependabot", (targets.dependabot,) if targets.dependabot else ()),
    ):
        if files:
            checks.append(
                Check(
                    f"check-jsonschema ({SCHEMAS[kind]})",
                    (
                        tool("check-jsonschema"),
                        "--builtin-schema",
                        SCHEMAS[kind],
                        *map(str, files),
                    ),
                )
            )
    return checks


def dockerfile_checks(dockerfile: Path, tool: Callable[[str], str] = find_tool) -> list[Check]:
    """The argv of ``lint.dockerfile``: hadolint on the Dockerfile."""
    return [Check("hadolint", (tool("hadolint"), "--no-color", str(dockerfile)))]


def run_checks(
    checks: Sequence[Check],
    *,
    cwd: Path,
    echo: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run every check (a failure does not stop the others); ``echo`` sees each outcome as it
    comes. Raises ``LintError`` naming the failed linters once all have run."""
    outcomes: list[Outcome] = []
    for check in checks:
        try:
            done = subprocess.run(
                list(check.argv), cwd=cwd, capture_output=True, text=True, check=False
            )
        except FileNotFoundError:
            raise CommandError(
                f"{check.argv[0]} is not installed",
                argv=check.argv,
                hint="run `uv sync` (the linters are in the `tools` dependency group)",
            ) from None
        outcome = Outcome(check, done.returncode, (done.stdout + done.stderr).strip())
        outcomes.append(outcome)
        if echo is not None:
            echo(outcome)
    failed = [o.check.name for o in outcomes if not o.ok]
    if failed:
        raise LintError(
            f"{', '.join(failed)} found problems",
            hint="see the output above",
        )
    return outcomes


def print_outcome(outcome: Outcome) -> None:
    mark = "ok" if outcome.ok else f"FAILED (exit code {outcome.returncode})"
    print(f"== {outcome.check.name}: {mark}")
    if outcome.output and not outcome.ok:
        print(outcome.output)
    sys.stdout.flush()


def lint_actions(root: Path) -> str:
    """``lint.actions``: every check run, each outcome printed; the closing line."""
    targets = find_targets(root)
    run_checks(action_checks(targets), cwd=root, echo=print_outcome)
    return f"clean: {len(targets.all)} files"


def lint_dockerfile(dockerfile: Path, root: Path) -> str:
    """``lint.dockerfile``: hadolint; the closing line."""
    run_checks(dockerfile_checks(dockerfile), cwd=root, echo=print_outcome)
    return f"clean: {dockerfile}"
