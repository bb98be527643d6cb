"""The scan run's edge checks (the scans themselves: tests/test_scan.py)."""

from __future__ import annotations

import pytest

from pipeline.config import Settings
from pipeline.errors import UsageError
from pipeline.scan.run import ScanRequest, run_scan


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
