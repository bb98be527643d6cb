"""release.envhistory and promote/rollback: the history is written before the environment
moves, ordered by the registry's sequence, never lost, and unsigned entries are skipped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from faultproxy import FaultProxy
from tinyimages import tiny_image

from pipeline.oci.reference import Reference, parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import RetryPolicy, TransientRegistryError
from pipeline.release.envhistory import Entry, entry_tag, entry_tags, previous
from pipeline.release.promote import history_tag, promote, rollback

FAST = RetryPolicy(attempts=2, max_seconds=10, initial=0.01, max_wait=0.05, jitter=0.01)
A, B, C = ("sha256:" + x * 64 for x in "abc")


def entries(*digests: str) -> list[Entry]:
    return [Entry(n, f"p-{n}", d) for n, d in enumerate(digests, 1)]


@pytest.mark.parametrize(
    ("history", "current", "expected"),
    [
        (entries(A, B, C), C, [B, A]),
        (entries(A, B, C, B), B, [C, A]),
        (entries(A, A), A, []),
        ([], None, []),
        (entries(A), None, [A]),
        (entries(A, B), A, []),  # the environment never left A: nothing before it
        (entries(A, B, C), A, []),
        (entries(A, B), C, [B, A]),  # C was written outside the pipeline
    ],
)
def test_rollback_candidates_are_the_entries_before_the_current_digest_newest_first(
    history: list[Entry], current: str | None, expected: list[str]
) -> None:
    assert [e.digest for e in previous(history, current)] == expected


def test_entries_are_numbered_by_a_sequence_and_sort_with_older_clock_stamps() -> None:
    stamp = history_tag("staging", datetime(2026, 11, 29, 17, tzinfo=UTC))
    tags = [entry_tag("staging", 3), stamp, entry_tag("staging", 1), "staging", "prod-" + "0" * 20]
    assert entry_tag("staging", 3) == "staging-00000000000000000003"
    assert [n for n, _ in entry_tags("staging", tags)] == [1, 3, 20261129170000000000]


# --- against the registry, through the fault proxy ---


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", 5000)) as p:
        yield p


@pytest.fixture
def direct(registry: str) -> RegistryClient:
    return RegistryClient(registry, retry=FAST)


@pytest.fixture
def image(registry: str) -> Reference:
    return parse_reference(f"{registry}/test/{uuid.uuid4().hex[:12]}")


def signed(*digests: str):  # type: ignore[no-untyped-def]
    return lambda ref: ref.digest in digests


def history(client: RegistryClient, image: Reference, env: str = "staging") -> list[str]:
    found = entry_tags(env, client.tags(image.repository))
    return [str(client.digest(image.repository, tag)) for _, tag in found]


@pytest.mark.engine
def test_a_503_on_the_history_write_leaves_the_environment_alone_and_a_rerun_converges(
    proxy: FaultProxy, direct: RegistryClient, image: Reference
) -> None:
    repo = image.repository
    a = tiny_image(direct, repo, "a").digest
    b = tiny_image(direct, repo, "b").digest
    promote(direct, image, "staging", a, verified=signed(a, b), log=lambda _: None)
    proxy.configure("status", -1, 503, match=rf"^PUT /v2/{repo}/manifests/staging-\d{{20}} ")
    through = RegistryClient(proxy.address, retry=FAST)
    with pytest.raises(TransientRegistryError, match="HTTP 503"):
        promote(through, image, "staging", b, verified=signed(a, b), log=lambda _: None)
    assert direct.digest(repo, "staging") == a
    proxy.configure("pass")
    lines: list[str] = []
    again = promote(through, image, "staging", b, verified=signed(a, b), log=lines.append)
    assert (again.digest, again.previous, again.changed) == (b, a, True)
    assert direct.digest(repo, "staging") == b
    assert history(direct, image) == [a, b]


@pytest.mark.engine
def test_a_history_entry_lost_after_the_environment_moved_is_written_by_the_rerun(
    direct: RegistryClient, image: Reference
) -> None:
    """What an older pipeline left behind: staging moved, its history write failed."""
    repo = image.repository
    a = tiny_image(direct, repo, "a").digest
    b = tiny_image(direct, repo, "b", tags=("staging",)).digest
    promote(direct, image, "staging", a, verified=signed(a, b), log=lambda _: None)
    direct.put_manifest(repo, "staging", direct.manifest(repo, b))  # moved, no history
    again = promote(direct, image, "staging", b, verified=signed(a, b), log=lambda _: None)
    assert again.changed is False
    assert again.history_tag == entry_tag("staging", 3)
    assert history(direct, image) == [b, a, b]


@pytest.mark.engine
def test_an_environment_written_outside_the_pipeline_is_recorded_as_previous(
    direct: RegistryClient, image: Reference
) -> None:
    repo = image.repository
    a = tiny_image(direct, repo, "a", tags=("staging",)).digest  # a raw PUT, no history
    b = tiny_image(direct, repo, "b").digest
    lines: list[str] = []
    moved = promote(direct, image, "staging", b, verified=signed(a, b), log=lines.append)
    assert moved.previous == a
    assert lines[0] == (
        f"{image.name}:staging was at {a} without a history entry (written outside the "
        f"pipeline): recorded it as {entry_tag('staging', 1)}"
    )
    back = rollback(direct, image, "staging", verified=signed(a, b), log=lambda _: None)
    assert (back.digest, back.previous) == (a, b)
    assert history(direct, image) == [a, b, a]


@pytest.mark.engine
def test_an_entry_stamped_by_a_clock_hours_ahead_does_not_win_later_rollbacks(
    direct: RegistryClient, image: Reference
) -> None:
    repo = image.repository
    ahead = datetime.now(UTC) + timedelta(hours=2)
    x = tiny_image(direct, repo, "x", tags=("staging", history_tag("staging", ahead))).digest
    a = tiny_image(direct, repo, "a").digest
    b = tiny_image(direct, repo, "b").digest
    ok = signed(x, a, b)
    promote(direct, image, "staging", a, verified=ok, log=lambda _: None)
    promote(direct, image, "staging", b, verified=ok, log=lambda _: None)
    back = rollback(direct, image, "staging", verified=ok, log=lambda _: None)
    assert back.digest == a
    assert history(direct, image) == [x, a, b, a]


@pytest.mark.engine
def test_rollback_skips_entries_that_fail_verification_one_line_each(
    direct: RegistryClient, image: Reference
) -> None:
    repo = image.repository
    a, u, v, b = (tiny_image(direct, repo, s).digest for s in "auvb")
    for digest in (a, u, v, b):
        promote(direct, image, "staging", digest, verified=signed(a, u, v, b), log=lambda _: None)
    lines: list[str] = []
    back = rollback(direct, image, "staging", verified=signed(a, b), log=lines.append)
    assert back.digest == a
    assert lines[:2] == [
        f"skipping history entry {entry_tag('staging', 3)} ({v}): "
        "no valid signature for the configured key",
        f"skipping history entry {entry_tag('staging', 2)} ({u}): "
        "no valid signature for the configured key",
    ]
    assert direct.digest(repo, "staging") == a
