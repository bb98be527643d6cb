"""docker.prune: retention planned purely, executed through the registry's HTTP API."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from faultproxy import push_image
from fixtures_ghcr import Remote
from ghcr_model import GhcrModel

from pipeline.errors import UsageError
from pipeline.registry.retry import RetryPolicy
from pipeline.release.prune import VERSION, Kind, Retention, classify, created_at, plan

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
FAST = RetryPolicy(attempts=3, max_seconds=10, initial=0.01, max_wait=0.05, jitter=0.01)


def d(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.mark.parametrize(
    ("tag", "kind"),
    [
        ("v1.2.3", Kind("release")),
        ("1.2.3-rc.1", Kind("release")),
        ("1.2", Kind("line")),
        ("1", Kind("line")),
        ("latest", Kind("latest")),
        ("production", Kind("environment")),
        ("production-20261129170000000001", Kind("history")),
        ("main-abc1234", Kind("branch", "main")),
        ("feature-x-0123abc", Kind("branch", "feature-x")),
        ("dev-main-abc1234-dirty", Kind("dev", "dev-main")),
        ("pr-42", Kind("pr", "pr-42", head=True)),
        ("pr-42-abc1234", Kind("pr", "pr-42")),
        (f"sha256-{'a' * 64}.sig", Kind("signature")),
        ("develop", Kind("other")),
        ("dev", Kind("other")),
    ],
)
def test_tags_are_classified_for_retention(tag: str, kind: Kind) -> None:
    assert classify(tag) == kind


def test_builds_beyond_the_newest_n_of_a_branch_are_deleted() -> None:
    tags = {f"main-{n:07x}": d(n) for n in range(1, 6)} | {"develop-0000009": d(9)}
    created = {d(n): NOW - timedelta(days=6 - n) for n in range(1, 6)} | {d(9): NOW}
    result = plan(tags, created, Retention(keep=3, days=30), NOW)
    assert result.delete_digests == {d(1): ["main-0000001"], d(2): ["main-0000002"]}
    assert {x.tag for x in result.kept} == {
        "main-0000003",
        "main-0000004",
        "main-0000005",
        "develop-0000009",
    }


def test_builds_older_than_d_days_are_deleted_even_within_the_newest_n() -> None:
    tags = {"main-0000001": d(1), "main-0000002": d(2), "pr-7": d(3), "pr-7-0000003": d(3)}
    created = {
        d(1): NOW - timedelta(days=40),
        d(2): NOW - timedelta(days=1),
        d(3): NOW - timedelta(days=31),
    }
    result = plan(tags, created, Retention(keep=10, days=30), NOW)
    assert result.delete_digests == {d(1): ["main-0000001"], d(3): ["pr-7", "pr-7-0000003"]}


def test_a_digest_that_a_release_or_environment_tag_points_at_is_never_deleted() -> None:
    tags = {
        "main-0000001": d(1),
        "v1.0.0": d(1),
        "main-0000002": d(2),
        "production": d(2),
        "main-0000003": d(3),
        "staging-20261101000000000000": d(3),
        "main-0000004": d(4),
    }
    created = {d(n): NOW - timedelta(days=90) for n in range(1, 5)}
    result = plan(tags, created, Retention(keep=1, days=30), NOW)
    assert result.delete_digests == {d(4): ["main-0000004"]}
    reasons = {x.tag: x.reason for x in result.kept}
    assert reasons["main-0000001"] == "kept: v1.0.0 points at the same digest"
    assert reasons["v1.0.0"] == "release: kept forever"


def test_signatures_go_with_their_image_and_stay_with_a_kept_one() -> None:
    sig1, sig2 = f"sha256-{d(1)[7:]}.sig", f"sha256-{d(2)[7:]}.sig"
    tags = {"main-0000001": d(1), sig1: d(11), "main-0000002": d(2), sig2: d(12)}
    created = {d(1): NOW - timedelta(days=60), d(2): NOW}
    result = plan(tags, created, Retention(keep=5, days=30), NOW)
    assert result.delete_digests == {d(1): ["main-0000001"], d(11): [sig1]}


def test_a_build_of_unknown_age_is_kept() -> None:
    result = plan({"main-0000001": d(1)}, {d(1): None}, Retention(keep=1, days=1), NOW)
    assert result.delete_digests == {}


def test_retention_needs_sane_numbers() -> None:
    with pytest.raises(UsageError, match="keep at least 1"):
        Retention(keep=0)
    with pytest.raises(UsageError, match="--days 0"):
        Retention(days=0)


def test_the_age_is_the_created_label_else_the_config_created_field() -> None:
    label = {"org.opencontainers.image.created": "2026-01-02T03:04:05Z"}
    assert created_at({"config": {"Labels": label}, "created": "2020-01-01T00:00:00Z"}) == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert created_at({"created": "2020-01-01T00:00:00.5Z"}) == datetime(
        2020, 1, 1, 0, 0, 0, 500000, tzinfo=UTC
    )
    assert created_at({}) is None


# --- against the real registry ---


def iso(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.engine
def test_prune_is_a_dry_run_by_default_then_deletes_exactly_the_plan(
    remote: Remote, tmp_path: Path
) -> None:
    """On registry:2 through the registry API; on the ghcr.io model through the Packages API
    (its /v2/ DELETE answers 405), with the same plan."""
    client = remote.client(FAST)
    repo = remote.repository
    digests = {}
    for name, age in [("main-0000001", 50), ("main-0000002", 3), ("main-0000003", 2), ("pr-9", 45)]:
        version = "pr-9-abc1234" if name == "pr-9" else f"dev-{name}"  # what built it
        label = {"org.opencontainers.image.created": iso(age), VERSION: version}
        digests[name] = push_image(f"{remote.ref}:{name}", tmp_path, labels=label)
    index = client.manifest(repo, "main-0000001")
    client.put_manifest(repo, "production", client.manifest(repo, "main-0000002"))
    client.put_manifest(repo, "v1.0.0", client.manifest(repo, "main-0000003"))
    before = {t: client.digest(repo, t) for t in client.tags(repo)}

    def task(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "invoke", "docker.prune", "--image", remote.ref, *args]
        return subprocess.run(argv, cwd=ROOT, env=remote.env, capture_output=True, text=True)

    dry = task("--keep", "1", "--days", "30")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"would delete main-0000001 ({index.digest[:19]}): beyond the newest 1 of its branch",
        f"would delete pr-9 ({digests['pr-9'][:19]}): older than 30 days",
        "2 digest(s) would be deleted, 4 tag(s) kept (dry run: pass --yes to delete)",
    ]
    assert {t: client.digest(repo, t) for t in client.tags(repo)} == before

    real = task("--keep", "1", "--days", "30", "--yes")
    assert real.returncode == 0, real.stderr
    assert (
        real.stdout.splitlines()[0]
        == {
            "registry": f"deleting through the registry API ({remote.ref})",
            "ghcr": f"deleting through the GitHub Packages API (package {repo.split('/', 1)[1]} "
            f"on {remote.host})",
        }[remote.kind]
    )
    assert real.stdout.splitlines()[-1] == "deleted 2 digest(s)"
    after = {t: client.digest(repo, t) for t in client.tags(repo)}
    assert after == {
        "main-0000002": digests["main-0000002"],
        "production": digests["main-0000002"],
        "main-0000003": digests["main-0000003"],
        "v1.0.0": digests["main-0000003"],
    }
    if remote.model is not None:
        assert remote.model.v2_deletes == 0
        assert len(remote.model.api_deletes) == 2


@pytest.mark.engine
def test_prune_on_ghcr_without_github_token_exits_2_before_deleting(ghcr: GhcrModel) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "REGISTRY_PASSWORD")}
    env |= {"INVOKE_DOCKER_REGISTRY_API": "ghcr"}
    argv = [sys.executable, "-m", "invoke", "docker.prune", "--image", f"{ghcr.host}/test/x"]
    done = subprocess.run([*argv, "--yes"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {ghcr.host} deletes through the GitHub Packages API: GITHUB_TOKEN is not set:"
        " set GITHUB_TOKEN or REGISTRY_PASSWORD (in Actions: `permissions: packages: write`)"
    )
    assert ghcr.requests == []
