"""redact: a token in the git remote never reaches a label, a record, a log or argv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.redact import public_url, redact

ROOT = Path(__file__).resolve().parent.parent
TOKEN_REMOTE = "https://ci-bot:ghp_X1234567890abcdef@github.com/acme/api-gateway.git"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (TOKEN_REMOTE, "https://github.com/acme/api-gateway"),
        ("https://x-access-token:abc@github.com/acme/app.git/", "https://github.com/acme/app"),
        ("https://github.com/acme/app?token=abc#frag", "https://github.com/acme/app"),
        ("git@github.com:acme/app.git", "https://github.com/acme/app"),
        ("ssh://git@github.com/acme/app.git", "https://github.com/acme/app"),
        ("https://git.example.com:8443/a/b", "https://git.example.com:8443/a/b"),
        ("/srv/git/app.git", ""),
        ("", ""),
    ],
)
def test_a_repository_url_is_shown_without_credentials_query_or_dot_git(
    url: str, shown: str
) -> None:
    assert public_url(url) == shown


def test_free_text_loses_url_credentials_assigned_secrets_and_github_tokens() -> None:
    text = f"fatal: {TOKEN_REMOTE} password=hunter2 token ghp_abcdefghijklmnop"
    assert redact(text) == (
        "fatal: https://***@github.com/acme/api-gateway.git password=*** token ***"
    )


def test_docker_tags_puts_no_token_from_the_git_remote_in_the_labels(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INVOKE_"))}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t")
    env.update(GIT_COMMITTER_EMAIL="t@e")
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "remote", "add", "origin", TOKEN_REMOTE],
        ["git", "commit", "-q", "--allow-empty", "-m", "x"],
    ):
        subprocess.run(argv, cwd=tmp_path, env=env, check=True)
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(ROOT), "docker.tags", "--format", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    labels = json.loads(done.stdout)["labels"]
    assert labels["org.opencontainers.image.source"] == "https://github.com/acme/api-gateway"
    assert labels["org.opencontainers.image.url"] == "https://github.com/acme/api-gateway"
    assert "ghp_" not in done.stdout + done.stderr
