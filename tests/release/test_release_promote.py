"""docker.promote / docker.rollback: environment tags at signed digests, history in the
registry."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from faultproxy import cosign_keys, push_image

from pipeline.errors import UsageError
from pipeline.oci.reference import Reference, parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import RetryPolicy
from pipeline.registry.transport import NotFoundError
from pipeline.release.promote import (
    NoHistoryError,
    check_environment,
    environments,
    history_tag,
    history_tags,
    history_time,
    previous_digest,
    promote,
    rollback,
)
from pipeline.release.sign import UnsignedError, config_from_env, sign

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=3, max_seconds=10, initial=0.01, max_wait=0.05, jitter=0.01)
A, B, C = ("sha256:" + x * 64 for x in "abc")
T0 = datetime(2026, 11, 29, 17, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("history", "current", "expected"),
    [
        ([("p-1", A), ("p-2", B), ("p-3", C)], C, B),
        ([("p-1", A), ("p-2", B), ("p-3", C), ("p-4", B)], B, C),
        ([("p-1", A), ("p-2", A)], A, None),
        ([], None, None),
        ([("p-1", A)], None, A),
        ([("p-1", A), ("p-2", B)], B, A),
    ],
)
def test_the_previous_digest_is_the_newest_history_entry_that_differs(
    history: list[tuple[str, str]], current: str | None, expected: str | None
) -> None:
    assert previous_digest(history, current) == expected


def test_history_tags_sort_in_time_order_and_belong_to_one_environment() -> None:
    stamps = [history_tag("production", T0 + timedelta(microseconds=n)) for n in (10, 2, 1000000)]
    assert stamps[1] == "production-20261129170000000002"
    tags = [*stamps, "staging-20261129170000000001", "production", "production-x", "v1.0.0"]
    assert history_tags("production", tags) == [stamps[1], stamps[0], stamps[2]]
    assert history_time(stamps[2]) == T0 + timedelta(seconds=1)


def test_environment_names_are_checked_against_the_configured_list() -> None:
    assert environments(None) == ("staging", "production")
    assert environments("qa, staging") == ("qa", "staging")
    assert check_environment("staging", ("staging", "production")) == "staging"
    with pytest.raises(UsageError, match="unknown environment 'prod': expected one of"):
        check_environment("prod", ("staging", "production"))
    with pytest.raises(UsageError, match="not usable as a tag"):
        environments(["Prod uction"])
    assert UsageError("x").exit_code == 2


# --- against the real registry ---


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def repo(scratch_repo: str, tmp_path: Path) -> tuple[Reference, list[str]]:
    """Three pushed builds: (image, [digest A, B, C])."""
    digests = [push_image(f"{scratch_repo}:build-{n}", tmp_path) for n in range(3)]
    return parse_reference(scratch_repo), digests


def signed_only(*digests: str):  # type: ignore[no-untyped-def]
    return lambda ref: ref.digest in digests


@pytest.mark.engine
def test_promotions_and_rollbacks_walk_the_history_kept_in_the_registry(
    registry: str, repo: tuple[Reference, list[str]]
) -> None:
    image, (a, b, c) = repo
    client = RegistryClient(registry, retry=FAST)
    clock = Clock()
    ok = signed_only(a, b, c)
    quiet = {"verified": ok, "now": clock, "log": lambda _: None}
    first = promote(client, image, "production", "build-0", **quiet)  # type: ignore[arg-type]
    assert (first.digest, first.previous, first.changed) == (a, None, True)
    promote(client, image, "production", b, **quiet)  # type: ignore[arg-type]
    promote(client, image, "production", f"{image.name}@{c}", **quiet)  # type: ignore[arg-type]
    assert client.digest(image.repository, "production") == c
    # A fresh client: the history lives in the registry, not in this process.
    other = RegistryClient(registry, retry=FAST)
    back = rollback(other, image, "production", **quiet)  # type: ignore[arg-type]
    assert (back.digest, back.previous) == (b, c)
    assert other.digest(image.repository, "production") == b
    again = rollback(other, image, "production", **quiet)  # type: ignore[arg-type]
    assert again.digest == c
    chosen = rollback(other, image, "production", "build-0", **quiet)  # type: ignore[arg-type]
    assert chosen.digest == a
    history = history_tags("production", client.tags(image.repository))
    assert [client.digest(image.repository, t) for t in history] == [a, b, c, b, c, a]
    assert client.digest(image.repository, "staging") is None


@pytest.mark.engine
def test_promoting_the_current_digest_changes_nothing(
    registry: str, repo: tuple[Reference, list[str]]
) -> None:
    image, (a, _, _) = repo
    client = RegistryClient(registry, retry=FAST)
    kw = {"verified": signed_only(a), "now": Clock(), "log": lambda _: None}
    promote(client, image, "staging", a, **kw)  # type: ignore[arg-type]
    tags = sorted(client.tags(image.repository))
    again = promote(client, image, "staging", a, **kw)  # type: ignore[arg-type]
    assert again.changed is False
    assert sorted(client.tags(image.repository)) == tags


@pytest.mark.engine
def test_bad_targets_are_refused_and_nothing_changes(
    registry: str, repo: tuple[Reference, list[str]]
) -> None:
    image, (a, b, _) = repo
    client = RegistryClient(registry, retry=FAST)
    kw = {"verified": signed_only(a), "now": Clock(), "log": lambda _: None}
    with pytest.raises(NoHistoryError, match="no earlier digest in the history of 'production'"):
        rollback(client, image, "production", **kw)  # type: ignore[arg-type]
    promote(client, image, "production", a, **kw)  # type: ignore[arg-type]
    tags = {t: client.digest(image.repository, t) for t in client.tags(image.repository)}
    with pytest.raises(UnsignedError, match="is not signed"):
        promote(client, image, "production", b, **kw)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match=r"sha256:d+ is not in the repository"):
        promote(client, image, "production", "sha256:" + "d" * 64, **kw)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match=r"v9\.9\.9 is not in the repository"):
        rollback(client, image, "production", "v9.9.9", **kw)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown environment 'qa'"):
        promote(client, image, "qa", a, **kw)  # type: ignore[arg-type]
    with pytest.raises(NoHistoryError):
        rollback(client, image, "production", **kw)  # type: ignore[arg-type]
    assert {t: client.digest(image.repository, t) for t in client.tags(image.repository)} == tags


def run_task(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env={**os.environ, "REGISTRY_RETRY_ATTEMPTS": "2", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.engine
def test_the_tasks_promote_signed_digests_and_roll_back_with_cosign(
    repo: tuple[Reference, list[str]], tmp_path: Path
) -> None:
    image, (a, b, c) = repo
    keys = cosign_keys(tmp_path / "keys")
    config = config_from_env(keys)
    sign(image.with_digest(a), config)
    sign(image.with_digest(b), config)
    public = {"COSIGN_PUBLIC_KEY": keys["COSIGN_PUBLIC_KEY"]}
    name = image.name
    first = run_task(
        "docker.promote", "--to", "production", "--ref", a, "--image", name, env=public
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == f"production={a}"
    run_task(
        "docker.promote", "--to", "production", "--ref", "build-1", "--image", name, env=public
    )
    unsigned = run_task(
        "docker.promote", "--to", "production", "--ref", c, "--image", name, env=public
    )
    assert unsigned.returncode == 1
    assert unsigned.stderr == (
        f"error: {name}@{c} is not signed (no valid signature for the configured key): "
        "production was not changed: sign it first: `invoke docker.sign`\n"
    )
    bad_env = run_task("docker.rollback", "--env", "prod", "--image", name, env=public)
    assert (bad_env.returncode, bad_env.stdout) == (2, "")
    assert bad_env.stderr.startswith("error: unknown environment 'prod'")
    back = run_task("docker.rollback", "--env", "production", "--image", name, env=public)
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines()[-1] == f"production={a}"
    none = run_task("docker.rollback", "--env", "staging", "--image", name, env=public)
    assert none.returncode == 1
    assert none.stderr == (
        f"error: {name}: no earlier digest in the history of 'staging': "
        "pass --to TAG|DIGEST, or promote first\n"
    )
    unknown = run_task(
        "docker.rollback", "--env", "production", "--to", "nope", "--image", name, env=public
    )
    assert unknown.returncode == 1
    assert unknown.stderr == (
        f"error: {name}: nope is not in the repository: pass a tag or digest that was pushed\n"
    )
    client = RegistryClient(image.host, retry=FAST)
    assert client.digest(image.repository, "production") == a
