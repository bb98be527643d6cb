"""Registry waits: Retry-After honoured within the budget, stalls are faults, and every step
of a merge and a push-by-digest (imagetools create, the inspect after the push) is retried."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from faultproxy import FaultProxy, build_image, remove_images
from tinyimages import tiny_image

from pipeline.build.record import BuildRecord
from pipeline.build.run import _sizes
from pipeline.engine.imagetools import imagetools_composer
from pipeline.errors import CommandError, EngineError
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import (
    RetryPolicy,
    TransientRegistryError,
    parse_retry_after,
    retry_command,
)
from pipeline.release.merge import merge
from pipeline.release.push import push_record

FAST = RetryPolicy(attempts=4, max_seconds=20, initial=0.01, max_wait=0.05, jitter=0.0)
NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("Sun, 29 Nov 2026 12:00:30 GMT", 30.0),
        ("Sun, 29 Nov 2026 11:00:00 GMT", 0.0),
        ("", None),
        ("soon", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header: str, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_a_command_failing_with_a_transient_fault_is_retried_and_another_is_not() -> None:
    calls: list[int] = []

    def reset_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise EngineError("imagetools inspect failed", stderr="read: connection reset by peer")
        return "ok"

    assert retry_command(reset_once, FAST) == "ok"
    assert len(calls) == 2
    calls.clear()

    def refused() -> str:
        calls.append(1)
        raise CommandError("imagetools create failed", stderr="denied: requested access")

    with pytest.raises(CommandError, match="imagetools create failed"):
        retry_command(refused, FAST)
    assert len(calls) == 1


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", 5000)) as p:
        yield p


@pytest.fixture
def stored(registry: str) -> tuple[str, str]:
    repo = f"test/{uuid.uuid4().hex[:12]}"
    return repo, tiny_image(RegistryClient(registry), repo, "waits", tags=("t",)).digest


@pytest.mark.engine
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_429_is_retried_after_the_retry_after_it_asks_for(
    proxy: FaultProxy, stored: tuple[str, str], form: str
) -> None:
    repo, digest = stored
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    proxy.configure("status", 1, 429, retry_after="2" if form == "seconds" else later)
    client = RegistryClient(proxy.address, retry=FAST)
    started = time.monotonic()
    assert client.digest(repo, "t") == digest
    assert 1.0 <= time.monotonic() - started < 5.0


@pytest.mark.engine
def test_a_retry_after_beyond_the_budget_gives_up_at_once_and_says_why(
    proxy: FaultProxy, stored: tuple[str, str]
) -> None:
    repo, _ = stored
    proxy.configure("status", -1, 503, retry_after="600")
    client = RegistryClient(proxy.address, retry=FAST)
    started = time.monotonic()
    with pytest.raises(TransientRegistryError) as caught:
        client.digest(repo, "t")
    assert time.monotonic() - started < 2.0
    assert caught.value.one_line().endswith(
        "the registry answered HTTP 503 Service Unavailable (the registry asked to wait 600s, "
        "more than the 20s retry budget allows; gave up after 1 attempt)"
    )


@pytest.mark.engine
def test_imagetools_create_in_a_merge_is_retried_through_resets(
    proxy: FaultProxy, registry: str, tmp_path: Path
) -> None:
    repo = f"test/{uuid.uuid4().hex[:12]}"
    client = RegistryClient(registry, retry=FAST)
    source = tiny_image(client, repo, "amd64")
    record = BuildRecord(
        image=f"{proxy.address}/{repo}",
        version="dev-main-0123456",
        tags=["main-0123456"],
        platforms=["linux/amd64"],
        unique=["main-0123456"],
    )
    proxy.configure("reset", 2)
    result = merge(
        record,
        [source.digest],
        client,
        compose=imagetools_composer(),
        expected=["linux/amd64"],
        log=lambda _: None,
    )
    assert proxy.faults == 2
    assert client.digest(repo, "main-0123456") == result.push.digest


@pytest.mark.engine
def test_the_inspect_after_a_push_by_digest_is_retried_through_resets(
    proxy: FaultProxy, stored: tuple[str, str]
) -> None:
    repo, digest = stored
    proxy.configure("reset", 2)
    plan = SimpleNamespace(push=True, platforms=["linux/amd64"])
    sizes = _sizes(plan, f"{proxy.address}/{repo}@{digest}", FAST)  # type: ignore[arg-type]
    assert list(sizes) == [""] and proxy.faults == 2


@pytest.mark.engine
@pytest.mark.timeout(600)
def test_a_stalled_upload_is_a_fault_stopped_after_the_stall_limit_not_push_timeout(
    tmp_path: Path,
) -> None:
    name = f"test/{uuid.uuid4().hex[:12]}"
    with FaultProxy(mode="stall_after_bytes", count=200_000) as proxy:
        image = f"{proxy.address}/{name}"
        record = BuildRecord(
            image=image,
            version="dev-main-abc1234",
            tags=["main-abc1234"],
            platforms=["linux/amd64", "linux/arm64"],
            unique=["main-abc1234"],
        )
        build_image(f"{image}:main-abc1234", tmp_path, size=2_000_000)
        path = tmp_path / "image.toml"
        record.write(path)
        extra = {
            "push_timeout": 1800,
            "push_stall_timeout": 4,
            "retry": {"attempts": 1, "max_seconds": 30},
        }
        started = time.monotonic()
        try:
            with pytest.raises(TransientRegistryError) as caught:
                push_record(path, extra=extra, environ={}, log=lambda _: None)
        finally:
            proxy.close()  # drop the held connections first: the daemon lets go of the image
            remove_images(f"{image}:main-abc1234")
        assert time.monotonic() - started < 30
        assert re.fullmatch(
            rf"upload sha256:[0-9a-f]{{12}} to {proxy.address}/{name}: timed out after 4s",
            caught.value.one_line(),
        )


@pytest.mark.engine
def test_a_blob_the_registry_took_before_its_answer_was_lost_is_not_uploaded_twice() -> None:
    """The PUT reached the registry, which stored the blob and closed the upload; the answer
    never arrived, so the retried PUT finds the upload gone (404): the blob is there, done."""
    import hashlib

    data = uuid.uuid4().bytes * 64
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    repo = f"test/{uuid.uuid4().hex[:12]}"
    policy = RetryPolicy(attempts=3, max_seconds=20, initial=0.05, max_wait=0.2, jitter=0.0)
    with FaultProxy() as proxy:
        proxy.configure("lose_answer", 1, match=r"^PUT /v2/.*/blobs/uploads/")
        client = RegistryClient(proxy.address, retry=policy)
        assert client.upload_blob(repo, digest, data) is True
        assert proxy.faults == 1
    assert RegistryClient("127.0.0.1:5000").blob(repo, digest) == data
