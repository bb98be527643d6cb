"""release.prune: an image is classified by the ref that produced it (its version label), not
by the shape of its tag's name; registry answers that are not JSON are one line."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tinyimages import tiny_image

from pipeline.errors import RegistryError
from pipeline.oci.reference import parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import RetryPolicy
from pipeline.release.promote import rollback
from pipeline.release.prune import Kind, Retention, classify_built, gather, plan

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=60)
FAST = RetryPolicy(attempts=2, max_seconds=5, initial=0.01, max_wait=0.02, jitter=0.0)


@pytest.mark.parametrize(
    ("tag", "version", "kind"),
    [
        ("fix-dead", "dev-fix-dead-1234567", Kind("other")),
        ("release-2025", "dev-release-2025-abc1234", Kind("other")),
        ("JIRA-1234", "dev-JIRA-1234-abc1234", Kind("other")),
        ("fix-dead-1234567", "dev-fix-dead-1234567", Kind("branch", "fix-dead")),
        ("main-abc1234", "dev-main-abc1234", Kind("branch", "main")),
        ("latest", "dev-main-abc1234", Kind("other")),
        ("dev-main-abc1234-dirty", "dev-main-abc1234-dirty", Kind("dev", "dev-main")),
        ("dev", "dev-main-abc1234-dirty", Kind("other")),
        ("pr-42", "pr-42-abc1234", Kind("pr", "pr-42", head=True)),
        ("v1.2.3", "1.2.3", Kind("release")),
        ("1.2", "1.2.3", Kind("line")),
        ("latest", "1.2.3", Kind("latest")),
        ("main-abc1234", None, Kind("other")),
        ("staging", "1.2.3", Kind("environment")),
        (f"sha256-{'a' * 64}.sig", None, Kind("signature")),
    ],
)
def test_a_tag_is_classified_by_the_version_label_of_its_image(
    tag: str, version: str | None, kind: Kind
) -> None:
    assert classify_built(tag, version) == kind


def test_old_branch_heads_named_like_builds_are_kept_and_the_old_build_goes() -> None:
    tags = {
        "fix-dead": "sha256:" + "1" * 64,
        "develop": "sha256:" + "2" * 64,
        "release-2025": "sha256:" + "3" * 64,
        "JIRA-1234": "sha256:" + "4" * 64,
        "main-0000001": "sha256:" + "5" * 64,
    }
    versions = {
        tags["fix-dead"]: "dev-fix-dead-1234567",
        tags["develop"]: "dev-develop-1234567",
        tags["release-2025"]: "dev-release-2025-abc1234",
        tags["JIRA-1234"]: "dev-JIRA-1234-abc1234",
        tags["main-0000001"]: "dev-main-0000001",
    }
    created = dict.fromkeys(tags.values(), OLD)
    result = plan(tags, created, Retention(keep=10, days=30), NOW, versions)
    assert result.delete_digests == {tags["main-0000001"]: ["main-0000001"]}


@pytest.mark.engine
def test_prune_deletes_the_old_build_and_keeps_every_old_branch_head(registry: str) -> None:
    repo = f"test/{uuid.uuid4().hex[:12]}"
    client = RegistryClient(registry, retry=FAST)
    old = (datetime.now(UTC) - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    heads = {
        "fix-dead": "dev-fix-dead-1234567",
        "develop": "dev-develop-1234567",
        "release-2025": "dev-release-2025-abc1234",
        "JIRA-1234": "dev-JIRA-1234-abc1234",
    }
    for tag, version in heads.items():
        labels = {"org.opencontainers.image.version": version}
        tiny_image(client, repo, tag, tags=(tag,), labels=labels, created=old)
    build = tiny_image(
        client,
        repo,
        "build",
        tags=("main-0000001",),
        labels={"org.opencontainers.image.version": "dev-main-0000001"},
        created=old,
    )
    argv = [sys.executable, "-m", "invoke", "docker.prune", "--image", f"{registry}/{repo}"]
    done = subprocess.run(
        [*argv, "--days", "30", "--yes"], cwd=ROOT, env=os.environ, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == [
        f"deleting through the registry API ({registry}/{repo})",
        f"delete main-0000001 ({build.digest[:19]}): older than 30 days",
    ]
    assert sorted(client.tags(repo)) == sorted(heads)


@pytest.fixture
def html_registry() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = b"<html><body>Please sign in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_registry_answering_html_is_one_registry_error_in_prune_and_rollback(
    html_registry: str,
) -> None:
    client = RegistryClient(html_registry, retry=FAST)
    with pytest.raises(RegistryError) as caught:
        gather(client, "acme/app", ("staging",))
    assert caught.value.one_line() == (
        f"list the tags of {html_registry}/acme/app: the registry answered text/html (40 "
        "bytes), not JSON: check the registry host: a proxy or a login page may be answering"
    )
    image = parse_reference(f"{html_registry}/acme/app")
    with pytest.raises(RegistryError, match="the registry answered text/html"):
        rollback(client, image, "staging", verified=lambda ref: True, log=lambda _: None)
