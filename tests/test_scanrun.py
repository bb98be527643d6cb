"""The scan run's edge checks and tool lookup (the scans themselves: tests/test_scan.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import UsageError
from pipeline.scan.run import ScanRequest, run_scan, tool


@pytest.mark.parametrize(
    ("request_", "environ", "message"),
    [
        (ScanRequest(format="xml"), {}, "--format 'xml': expected text, json or github"),
        (ScanRequest(format="github"), {}, "--format github: GITHUB_OUTPUT is not set"),
    ],
)
def test_bad_flags_are_refused_before_anything_is_scanned(
    request_: ScanRequest, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        run_scan(request_, settings=Settings.from_mapping({}), environ=environ)
    assert caught.value.one_line() == message


def test_tools_come_from_the_venv_when_there_else_from_path(tmp_path: Path) -> None:
    (tmp_path / "trivy").write_text("")
    assert tool("trivy", tmp_path) == str(tmp_path / "trivy")
    assert tool("hadolint", tmp_path) == "hadolint"
    assert tool("trivy", None) == "trivy"
