"""pipeline.github: the run's URL from Actions' environment."""

from __future__ import annotations

import pytest

from pipeline.github import run_url


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        (
            {"GITHUB_RUN_ID": "7", "GITHUB_REPOSITORY": "acme/api-gateway"},
            "https://github.com/acme/api-gateway/actions/runs/7",
        ),
        (
            {
                "GITHUB_RUN_ID": "9",
                "GITHUB_REPOSITORY": "team/gw",
                "GITHUB_SERVER_URL": "https://ghe.example.com",
            },
            "https://ghe.example.com/team/gw/actions/runs/9",
        ),
        ({"GITHUB_REPOSITORY": "acme/api-gateway"}, ""),
        ({}, ""),
    ],
)
def test_the_run_url_is_built_from_actions_variables_and_empty_outside(
    environ: dict[str, str], url: str
) -> None:
    assert run_url(environ) == url
