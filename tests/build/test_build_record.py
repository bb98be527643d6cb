"""build.record: the build record round-trips, is written atomically and refuses what it cannot
read with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.build.record import BuildRecord
from pipeline.errors import UsageError

DIGEST = "sha256:" + "ab" * 32


def full_record() -> BuildRecord:
    return BuildRecord(
        image="127.0.0.1:5000/acme/gw",
        version="1.2.3",
        tags=["v1.2.3", "1.2.3", "1.2", "1", "latest"],
        platforms=["linux/amd64", "linux/arm64"],
        immutable=["v1.2.3", "1.2.3"],
        latest=True,
        labels={"org.opencontainers.image.version": "1.2.3"},
        digest=DIGEST,
        pushed=True,
        revision="0123456789abcdef0123456789abcdef01234567",
        ref="refs/tags/v1.2.3",
        event="push",
        duration_s=12.5,
        cached_steps=3,
        total_steps=9,
        sizes={"linux/amd64": 42_000_000},
        base_name="docker.io/library/python:3.11-slim",
        base_digest=DIGEST,
        built_at="2026-11-29T23:14:32Z",
        extra={"builder": "default", "push": {"tags": ["v1.2.3"]}},
    )


def test_a_record_reads_back_as_it_was_written(tmp_path: Path) -> None:
    record = full_record()
    path = tmp_path / "build" / "image.toml"
    record.write(path)
    assert BuildRecord.read(path) == record
    assert not list(path.parent.glob("*.tmp"))


def test_the_reference_is_the_first_tag_and_every_tag_is_full() -> None:
    record = full_record()
    assert record.reference == "127.0.0.1:5000/acme/gw:v1.2.3"
    assert record.full_tags[-1] == "127.0.0.1:5000/acme/gw:latest"


def test_a_rewrite_replaces_the_whole_record(tmp_path: Path) -> None:
    path = tmp_path / "image.toml"
    full_record().write(path)
    BuildRecord(image="r/gw", version="dev", tags=["dev"], platforms=["linux/amd64"]).write(path)
    record = BuildRecord.read(path)
    assert (record.image, record.digest, record.extra) == ("r/gw", "", {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "no build record at"),
        ("not = [toml", "corrupt build record"),
        ('schema = 2\nimage = "r/gw"\n', "build record of another schema"),
    ],
)
def test_an_unreadable_record_is_one_line_saying_what_to_do(
    tmp_path: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "image.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UsageError, match=message) as caught:
        BuildRecord.read(path)
    assert caught.value.hint in ("run `invoke docker.build` first", "rebuild")


def test_keys_of_a_newer_writer_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "image.toml"
    full_record().write(path)
    path.write_text(path.read_text() + 'future_key = "x"\n')
    assert BuildRecord.read(path).version == "1.2.3"
