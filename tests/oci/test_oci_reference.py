"""oci.reference: the one image-reference parser, digests and the loopback rule (pure)."""

from __future__ import annotations

import pytest

from pipeline.errors import RegistryError, UsageError
from pipeline.oci.reference import Reference, digest_of, is_digest, is_loopback, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ghcr.io/acme/gw:1.2.3", Reference("ghcr.io", "acme/gw", "1.2.3")),
        ("127.0.0.1:5000/a/b", Reference("127.0.0.1:5000", "a/b")),
        ("127.0.0.1:5000/a/b:edge", Reference("127.0.0.1:5000", "a/b", "edge")),
        (f"r.io/a@{DIGEST}", Reference("r.io", "a", "", DIGEST)),
        (f"r.io/a:1@{DIGEST}", Reference("r.io", "a", "1", DIGEST)),
        ("localhost/gw", Reference("localhost", "gw")),
        ("[::1]:5000/gw:v1", Reference("[::1]:5000", "gw", "v1")),
        ("python:3.11-slim", Reference("docker.io", "library/python", "3.11-slim")),
        ("acme/gw", Reference("docker.io", "acme/gw")),
    ],
)
def test_a_reference_splits_into_host_repository_tag_and_digest(
    text: str, expected: Reference
) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'' is not an image reference"),
        ("a b", "'a b' is not an image reference"),
        ("r.io/a:", "'r.io/a:': empty tag"),
        ("r.io/a@sha256:short", "'r.io/a@sha256:short': 'sha256:short' is not a sha256 digest"),
        (":tag", "':tag': no repository name"),
        ("r.io/", "'r.io/': no repository name"),
        ("R.io/Upper/Case", "'R.io/Upper/Case': 'Upper/Case' is not a repository name"),
        ("r.io/a..b:1", "'r.io/a..b:1': 'a..b' is not a repository name"),
        ("r.io/-a", "'r.io/-a': '-a' is not a repository name"),
        ("bad_host.io/a", "'bad_host.io/a': 'bad_host.io' is not a registry host"),
        ("r.io:99999x/a", "'r.io:99999x/a': 'r.io:99999x' is not a registry host"),
    ],
)
def test_a_malformed_reference_is_refused_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_reference(text)
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(
    ("text", "name", "pinned"),
    [
        ("127.0.0.1:5000/test/gw:1.2.3", "127.0.0.1:5000/test/gw", "127.0.0.1:5000/test/gw@"),
        ("ghcr.io/acme/gw@sha256:" + "00" * 32, "ghcr.io/acme/gw", "ghcr.io/acme/gw@"),
        ("localhost:5000/gw:v1", "localhost:5000/gw", "localhost:5000/gw@"),
    ],
)
def test_a_reference_pinned_to_a_digest_drops_its_tag(text: str, name: str, pinned: str) -> None:
    ref = parse_reference(text).with_digest(DIGEST)
    assert ref.name == name
    assert ref.pinned == pinned + DIGEST
    assert str(ref) == pinned + DIGEST


def test_an_unpinned_reference_cannot_be_deployed() -> None:
    with pytest.raises(UsageError, match="no digest to pin"):
        _ = parse_reference("r.io/a:1").pinned


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("localhost:5000", True),
        ("localhost", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("ghcr.io", False),
        ("docker.io", False),
        ("10.0.0.1:5000", False),
        ("[2001:db8::1]:5000", False),
    ],
)
def test_only_loopback_registries_speak_plain_http(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_digest_is_sha256_of_the_exact_bytes() -> None:
    digest = digest_of(b"{}")
    assert digest == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert is_digest(digest)
    assert not is_digest("sha256:short")
