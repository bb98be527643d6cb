"""The CLI the README promises is the CLI Invoke parses: every task it names exists, and every
flag it shows beside a task is one of that task's flags (read through Invoke's own parser
contexts, built from tasks.py's namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks import ns

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
NOT_A_FILE = r"(?!(?:ya?ml|json|toml|md)\b)"  # deploy.yml is a workflow, not a task
TASK = rf"(?:docker|deploy|lint|bench)\.{NOT_A_FILE}[a-z][a-z0-9-]*|report|notify|test"
FLAG = r"--[a-z][a-z0-9-]*"
CONTEXTS = {context.name: context for context in ns.to_contexts()}


def accepts(task: str, flag: str) -> bool:
    context = CONTEXTS[task]
    return flag in context.flags or flag in context.inverse_flags


def spans(text: str) -> list[str]:
    """Code spans and the lines of fenced code blocks."""
    fenced = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)
    lines = [line.split("#", 1)[0] for block in fenced for line in block.splitlines()]
    outside = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return lines + re.findall(r"`([^`\n]+)`", outside)


def commands(span: str) -> list[tuple[str, list[str]]]:
    """Each task a span runs (``invoke TASK`` or a span that starts with a task), with the flags
    that follow it up to the next task."""
    found = []
    pieces = re.split(rf"(?:^|\binvoke\s+)({TASK})(?=\s|$|\[)", span.strip())
    for task, rest in zip(pieces[1::2], pieces[2::2], strict=True):
        found.append((task, re.findall(rf"(?<![\w-]){FLAG}", rest)))
    return found


def table_rows(text: str) -> list[tuple[list[str], list[str]]]:
    """The task table: each row's tasks (first column) and every flag in its other columns."""
    section = text.split("## Tasks", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = line.split("` | ", 1)
        if not line.startswith("| `") or len(cells) != 2:
            continue
        tasks = re.findall(rf"`({TASK})\b", cells[0] + "`")
        flags = [f for span in re.findall(r"`([^`]+)`", cells[1]) for f in re.findall(FLAG, span)]
        rows.append((tasks, flags))
    return rows


SHOWN = sorted({(task, tuple(flags)) for span in spans(README) for task, flags in commands(span)})


def test_the_readme_shows_the_commands_a_newcomer_runs() -> None:
    shown = {task for task, _ in SHOWN}
    assert {"docker.build", "docker.publish", "docker.tags", "test", "deploy.k8s"} <= shown
    assert ("test", ("--no-engine",)) in SHOWN


@pytest.mark.parametrize(("task", "flags"), SHOWN, ids=[" ".join([t, *f]) for t, f in SHOWN])
def test_every_command_in_the_readme_is_a_task_with_those_flags(
    task: str, flags: tuple[str, ...]
) -> None:
    assert task in CONTEXTS, f"the README runs {task}, which tasks.py does not define"
    assert [f for f in flags if not accepts(task, f)] == []


def test_every_flag_in_the_task_table_belongs_to_its_rows_task() -> None:
    rows = table_rows(README)
    assert len(rows) == 17
    for tasks, flags in rows:
        assert tasks and all(task in CONTEXTS for task in tasks), tasks
        strays = [f for f in flags if not any(accepts(task, f) for task in tasks)]
        assert strays == [], f"{tasks}: {strays}"


def test_a_flag_no_task_takes_would_be_caught() -> None:
    assert commands("invoke docker.tags --ref main --colour red") == [
        ("docker.tags", ["--ref", "--colour"])
    ]
    assert not accepts("docker.tags", "--colour")
    assert accepts("docker.publish", "--no-push") and accepts("docker.build", "--build-arg")
