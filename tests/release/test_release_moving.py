"""release.moving: the moving tags move together or not at all, through injected faults."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from tinyimages import tiny_image

from pipeline.build.record import BuildRecord
from pipeline.errors import RegistryError
from pipeline.oci.manifest import Manifest
from pipeline.oci.reference import digest_of
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import RetryPolicy
from pipeline.release.moving import MovingTagsError, move
from pipeline.release.push import push_record

FAST = RetryPolicy(attempts=3, max_seconds=20, initial=0.01, max_wait=0.05, jitter=0.01)


class Recorded:
    """A registry in memory: tag -> manifest, each write logged; ``fail_on`` raises there."""

    host = "memory"

    def __init__(self, tags: dict[str, Manifest], fail_on: str, error: BaseException) -> None:
        self.tags, self.fail_on, self.error = dict(tags), fail_on, error
        self.writes: list[str] = []

    def digest(self, repository: str, tag: str) -> str | None:
        return self.tags[tag].digest if tag in self.tags else None

    def manifest(self, repository: str, ref: str) -> Manifest:
        return next(m for m in self.tags.values() if m.digest == ref)

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        if tag == self.fail_on and manifest.digest != self.tags[tag].digest:
            self.fail_on = ""
            raise self.error
        self.writes.append(tag)
        self.tags[tag] = manifest
        return manifest.digest


def manifest(seed: str) -> Manifest:
    body = f'{{"schemaVersion":2,"seed":"{seed}"}}'.encode()
    return Manifest(digest_of(body), "application/vnd.oci.image.manifest.v1+json", body)


def test_ctrl_c_half_way_puts_the_written_tags_back_before_stopping() -> None:
    old, new = manifest("old"), manifest("new")
    registry = Recorded({"1.2": old, "1": old}, fail_on="1", error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        move(registry, "r", new, ["1.2", "1"], log=lambda _: None)  # type: ignore[arg-type]
    assert registry.writes == ["1.2", "1.2"]
    assert {t: m.digest for t, m in registry.tags.items()} == {"1.2": old.digest, "1": old.digest}


def test_a_restore_the_registry_refuses_too_is_named_with_its_reason() -> None:
    old, new = manifest("old"), manifest("new")

    class Broken(Recorded):
        def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
            if self.writes:
                raise RegistryError("write memory/r: the registry answered HTTP 500")
            return super().put_manifest(repository, tag, manifest)

    registry = Broken({"1.2": old, "1": old}, fail_on="", error=KeyboardInterrupt())
    with pytest.raises(MovingTagsError) as caught:
        move(registry, "r", new, ["1.2", "1"], log=lambda _: None)  # type: ignore[arg-type]
    assert caught.value.one_line() == (
        f"moving the tags to {new.digest} failed (write memory/r: the registry answered HTTP "
        f"500); written: 1.2; NOT restored: 1.2 (left at {new.digest}: refused): the moving "
        "tags are split: run the push again to move them all"
    )


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", 5000)) as p:
        yield p


@pytest.fixture
def direct(registry: str) -> RegistryClient:
    return RegistryClient(registry, retry=FAST)


def a_release(repo: str, version: str, moving: tuple[str, ...]) -> BuildRecord:
    release = (f"v{version}", version)
    return BuildRecord(
        image=f"127.0.0.1:5000/{repo}",
        version=version,
        tags=[*release, *moving],
        platforms=["linux/amd64"],
        immutable=list(release),
    )


def released(direct: RegistryClient, repo: str) -> tuple[Manifest, Manifest]:
    """3.1.0 holds v3.1.0, 3.1.0, 3.1, 3 and latest; 3.1.1 is uploaded under v3.1.1 only."""
    old = tiny_image(direct, repo, "3.1.0", tags=("v3.1.0", "3.1.0", "3.1", "3", "latest"))
    new = tiny_image(direct, repo, "3.1.1", tags=("v3.1.1",))
    return old, new


def push_through(
    proxy: FaultProxy, record: BuildRecord, path: Path, new: Manifest, policy: str = "branch"
) -> None:
    record.write(path)
    push_record(
        path,
        extra={},
        environ={},
        latest_policy=policy,
        docker=lambda argv, stdin: None,
        client=RegistryClient(proxy.address, retry=FAST),
        inspect=lambda ref: new.digest,
        log=lambda line: None,
    )


@pytest.mark.engine
def test_a_503_on_the_write_of_3_after_3_1_puts_3_1_back_and_says_so_in_the_record(
    proxy: FaultProxy, direct: RegistryClient, tmp_path: Path
) -> None:
    repo = f"test/{uuid.uuid4().hex[:12]}"
    old, new = released(direct, repo)
    proxy.configure("status", -1, 503, match=rf"^PUT /v2/{repo}/manifests/3 ")
    path = tmp_path / "image.toml"
    with pytest.raises(MovingTagsError) as caught:
        push_through(proxy, a_release(repo, "3.1.1", ("3.1", "3")), path, new)
    assert direct.digest(repo, "3.1") == old.digest
    assert direct.digest(repo, "3") == old.digest
    assert direct.digest(repo, "3.1.1") == new.digest
    line = caught.value.one_line()
    assert f"moving the tags to {new.digest} failed" in line
    assert f"written: 3.1; restored: 3.1 -> {old.digest}" in line
    assert "HTTP 503" in line
    moving = BuildRecord.read(path).extra["moving"]
    assert moving == {
        "result": "restored",
        "digest": new.digest,
        "written": ["3.1"],
        "restored": {"3.1": old.digest},
        "unrestored": {},
        "error": caught.value.cause,
    }


@pytest.mark.engine
def test_a_new_moving_tag_the_registry_cannot_delete_is_named_as_not_restored(
    proxy: FaultProxy, direct: RegistryClient
) -> None:
    repo = f"test/{uuid.uuid4().hex[:12]}"
    old, new = released(direct, repo)
    proxy.configure("status", -1, 503, match=rf"^PUT /v2/{repo}/manifests/3 ")
    client = RegistryClient(proxy.address, retry=FAST)
    with pytest.raises(MovingTagsError) as caught:
        move(client, repo, new, ["3.1", "4-rc", "3"], log=lambda line: None)
    # Tags that existed are written first, so the failure on 3 leaves 4-rc unwritten.
    assert caught.value.written == ["3.1"]
    assert direct.digest(repo, "4-rc") is None
    proxy.configure("status", -1, 503, match=rf"^PUT /v2/{repo}/manifests/5 ")
    with pytest.raises(MovingTagsError) as caught:
        move(client, repo, new, ["3", "4-rc", "5"], log=lambda line: None)
    assert caught.value.restored == {"3": old.digest}
    assert list(caught.value.unrestored) == ["4-rc"]
    assert "the registry cannot delete a tag" in caught.value.one_line()
    assert "NOT restored: 4-rc" in caught.value.one_line()
    assert direct.digest(repo, "3") == old.digest


@pytest.mark.engine
def test_moving_tags_already_at_the_digest_are_left_alone(
    proxy: FaultProxy, direct: RegistryClient
) -> None:
    repo = f"test/{uuid.uuid4().hex[:12]}"
    old, new = released(direct, repo)
    direct.put_manifest(repo, "3", new)
    done = move(direct, repo, new, ["3.1", "3"], log=lambda line: None)
    assert done.written == ("3.1",)
    assert done.unchanged == ("3",)
    assert done.previous == {"3.1": old.digest, "3": new.digest}


@pytest.mark.engine
def test_a_push_with_a_fault_burst_at_a_random_request_moves_all_moving_tags_or_none(
    proxy: FaultProxy, direct: RegistryClient, tmp_path: Path
) -> None:
    """The property: whatever request a burst of faults hits (a 503, a 429 or a reset, for
    up to 2 x attempts - 1 requests in a row, so that a failing write leaves the restore a
    retry budget), afterwards latest, 3.1 and 3 are all on the new release or all on the old."""
    seeds = range(40)
    started = time.monotonic()
    outcomes = {"moved": 0, "failed": 0}
    for seed in seeds:
        rng = random.Random(seed)
        repo = f"test/prop-{uuid.uuid4().hex[:10]}"
        old, new = released(direct, repo)
        mode = rng.choice(["status", "reset"])
        status = rng.choice([503, 429, 500])
        burst = rng.randint(1, 2 * FAST.attempts - 1)
        proxy.configure(mode, burst, status, skip=rng.randint(0, 24))
        record = a_release(repo, "3.1.1", ("3.1", "3"))
        try:
            push_through(proxy, record, tmp_path / f"{seed}.toml", new, policy="release")
            outcomes["moved"] += 1
        except RegistryError:
            outcomes["failed"] += 1
        proxy.configure("pass")
        moving = {tag: direct.digest(repo, tag) for tag in ("latest", "3.1", "3")}
        assert set(moving.values()) in ({old.digest}, {new.digest}), (seed, mode, moving)
    assert outcomes["moved"] and outcomes["failed"], outcomes
    assert time.monotonic() - started < 240
