"""GitHub Actions' files: step outputs and the step summary. Paths come from the edge."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path


def write_outputs(path: Path, outputs: Mapping[str, str]) -> None:
    """Append ``name=value`` lines (heredoc form for multi-line values) to ``$GITHUB_OUTPUT``."""
    lines = []
    for name, value in outputs.items():
        if "\n" in value:
            delimiter = f"EOF_{secrets.token_hex(8)}"
            lines.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            lines.append(f"{name}={value}\n")
    with path.open("a", encoding="utf-8") as fh:
        fh.writelines(lines)


def append_summary(path: Path, markdown: str) -> None:
    """Append Markdown to ``$GITHUB_STEP_SUMMARY``."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(markdown.rstrip("\n") + "\n")


def run_url(environ: Mapping[str, str]) -> str:
    """The URL of the Actions run (``GITHUB_SERVER_URL/REPOSITORY/actions/runs/RUN_ID``), or ""
    outside Actions."""
    run_id = environ.get("GITHUB_RUN_ID", "")
    if not run_id:
        return ""
    server = environ.get("GITHUB_SERVER_URL", "https://github.com")
    return f"{server}/{environ.get('GITHUB_REPOSITORY', '')}/actions/runs/{run_id}"


def report_to_github(
    environ: Mapping[str, str], *, outputs: Mapping[str, str] | None = None, summary: str = ""
) -> None:
    """The one place that writes to GitHub Actions: ``outputs`` to ``$GITHUB_OUTPUT`` and
    ``summary`` (Markdown) to ``$GITHUB_STEP_SUMMARY``, each when its variable is set."""
    if outputs and environ.get("GITHUB_OUTPUT"):
        write_outputs(Path(environ["GITHUB_OUTPUT"]), outputs)
    if summary and environ.get("GITHUB_STEP_SUMMARY"):
        append_summary(Path(environ["GITHUB_STEP_SUMMARY"]), summary)
