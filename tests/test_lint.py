"""`invoke lint.actions` / `lint.dockerfile`: which files, which argvs, and a failure that names
the linter in one line while every linter still runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import LintError
from pipeline.lint import Check, Targets, action_checks, dockerfile_checks, find_targets, run_checks

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INVOKE_"))}
    return subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_targets_are_the_workflows_the_actions_dependabot_and_zizmors_config(
    tmp_path: Path,
) -> None:
    tree(
        tmp_path,
        {
            ".github/workflows/b.yml": "",
            ".github/workflows/a.yaml": "",
            ".github/dependabot.yml": "",
            ".github/zizmor.yml": "",
            "actions/publish/action.yml": "",
            "actions/setup/action.yml": "",
            "actions/notes/README.md": "",
            "tests/actions/checkout/action.yml": "",
        },
    )
    assert find_targets(tmp_path) == Targets(
        workflows=(Path(".github/workflows/a.yaml"), Path(".github/workflows/b.yml")),
        actions=(Path("actions/publish/action.yml"), Path("actions/setup/action.yml")),
        dependabot=Path(".github/dependabot.yml"),
        zizmor_config=Path(".github/zizmor.yml"),
    )


def test_each_linter_gets_its_files_and_zizmor_runs_offline() -> None:
    targets = Targets(
        workflows=(Path("w.yml"),),
        actions=(Path("actions/a/action.yml"),),
        dependabot=Path("d.yml"),
        zizmor_config=None,
    )
    assert action_checks(targets, lambda name: f"/bin/{name}") == [
        Check("actionlint", ("/bin/actionlint", "-oneline", "-no-color", "w.yml")),
        Check(
            "zizmor",
            (
                "/bin/zizmor",
                "--offline",
                "--no-progress",
                "--format",
                "plain",
                "--no-config",
                "w.yml",
                "actions/a/action.yml",
                "d.yml",
            ),
        ),
        Check(
            "check-jsonschema (vendor.github-workflows)",
            ("/bin/check-jsonschema", "--builtin-schema", "vendor.github-workflows", "w.yml"),
        ),
        Check(
            "check-jsonschema (vendor.github-actions)",
            (
                "/bin/check-jsonschema",
                "--builtin-schema",
                "vendor.github-actions",
                "actions/a/action.yml",
            ),
        ),
        Check(
            "check-jsonschema (vendor.dependabot)",
            ("/bin/check-jsonschema", "--builtin-schema", "vendor.dependabot", "d.yml"),
        ),
    ]


def test_nothing_to_lint_is_an_error_not_a_pass() -> None:
    with pytest.raises(LintError, match="no workflows or actions to lint"):
        action_checks(Targets((), (), None))


def test_the_dockerfile_goes_to_hadolint() -> None:
    assert dockerfile_checks(Path("docker/Dockerfile"), str) == [
        Check("hadolint", ("hadolint", "--no-color", "docker/Dockerfile"))
    ]


def test_every_check_runs_and_the_failure_names_the_failed_ones(tmp_path: Path) -> None:
    seen: list[str] = []
    checks = [
        Check("first", ("false",)),
        Check("second", ("true",)),
        Check("third", (sys.executable, "-c", "print('bad thing'); raise SystemExit(3)")),
    ]
    with pytest.raises(LintError) as caught:
        run_checks(checks, cwd=tmp_path, echo=lambda o: seen.append(f"{o.check.name}:{o.ok}"))
    assert seen == ["first:False", "second:True", "third:False"]
    assert caught.value.one_line() == "first, third found problems: see the output above"


def test_the_repository_passes_lint_actions() -> None:
    done = invoke("lint.actions")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== actionlint: ok" in done.stdout
    assert "== zizmor: ok" in done.stdout
    assert "== check-jsonschema (vendor.github-workflows): ok" in done.stdout
    assert "== check-jsonschema (vendor.github-actions): ok" in done.stdout
    assert "== check-jsonschema (vendor.dependabot): ok" in done.stdout


def test_the_dockerfile_passes_lint_dockerfile() -> None:
    done = invoke("lint.dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["== hadolint: ok", "clean: docker/Dockerfile"]


def test_a_broken_dockerfile_fails_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && apt-get install curl\n")
    done = invoke("lint.dockerfile", "--dockerfile", str(bad))
    assert done.returncode == 1
    assert "DL3007" in done.stdout  # hadolint's own report: using the latest tag
    assert done.stderr.strip() == "error: hadolint found problems: see the output above"


UNSAFE = """\
name: unsafe
on: pull_request_target
permissions: write-all
jobs:
  greet:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
"""


def test_an_unpinned_action_and_a_template_injection_fail_the_linters(tmp_path: Path) -> None:
    tree(tmp_path, {".github/workflows/unsafe.yml": UNSAFE})
    outcomes: dict[str, str] = {}
    venv_bin = Path(sys.executable).parent
    checks = action_checks(find_targets(tmp_path), lambda name: str(venv_bin / name))
    with pytest.raises(LintError):
        run_checks(checks, cwd=tmp_path, echo=lambda o: outcomes.update({o.check.name: o.output}))
    assert "unpinned-uses" in outcomes["zizmor"]
    assert "template-injection" in outcomes["zizmor"]
    assert "github.event.pull_request.title" in outcomes["actionlint"]
