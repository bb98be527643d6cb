"""The registry HTTP API client: references, credentials, retries, and the real registry
(through the fault-injecting proxy)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from faultproxy import FaultProxy, build_image, remove_images

from pipeline.errors import RegistryError
from pipeline.oci.manifest import Manifest
from pipeline.oci.reference import Reference, digest_of, is_loopback, parse_reference
from pipeline.registry.auth import Credentials, credentials_for
from pipeline.registry.client import RegistryClient, client_for
from pipeline.registry.retry import (
    RetryPolicy,
    TransientRegistryError,
    call_with_retry,
    retry_policy,
)
from pipeline.registry.transport import AuthError, NotFoundError

FAST = RetryPolicy(attempts=4, max_seconds=10, initial=0.01, max_wait=0.05, jitter=0.01)
DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ghcr.io/acme/app:v1.2.3", Reference("ghcr.io", "acme/app", "v1.2.3")),
        ("127.0.0.1:5000/test/x", Reference("127.0.0.1:5000", "test/x")),
        (f"127.0.0.1:5000/test/x@{DIGEST}", Reference("127.0.0.1:5000", "test/x", "", DIGEST)),
        (f"localhost/a:b@{DIGEST}", Reference("localhost", "a", "b", DIGEST)),
        ("python:3.11-slim", Reference("docker.io", "library/python", "3.11-slim")),
        ("acme/app", Reference("docker.io", "acme/app")),
        ("localhost:5000/a/b/c:dev", Reference("localhost:5000", "a/b/c", "dev")),
    ],
)
def test_a_reference_is_split_into_host_repository_tag_and_digest(
    text: str, expected: Reference
) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text", ["", "ghcr.io/Acme/App:v1", "a b", "x@sha256:short", "ghcr.io/a:-bad"]
)
def test_a_malformed_reference_is_refused(text: str) -> None:
    with pytest.raises(RegistryError):
        parse_reference(text)


def test_a_reference_prints_back_as_docker_writes_it() -> None:
    ref = parse_reference("127.0.0.1:5000/test/x:v1")
    assert str(ref) == "127.0.0.1:5000/test/x:v1"
    assert str(ref.with_digest(DIGEST)) == f"127.0.0.1:5000/test/x@{DIGEST}"
    assert ref.ref == "v1" and ref.with_digest(DIGEST).ref == DIGEST


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("ghcr.io", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_only_loopback_registries_are_spoken_to_in_plain_http(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert RegistryClient(host).scheme == ("http" if loopback else "https")


def test_credentials_come_from_registry_variables_then_github_token_for_ghcr() -> None:
    env = {"REGISTRY_USERNAME": "bot", "REGISTRY_PASSWORD": "s3cret", "GITHUB_TOKEN": "gh"}
    assert credentials_for("ghcr.io", env) == Credentials("bot", "s3cret")
    gh = {"GITHUB_ACTOR": "octo", "GITHUB_TOKEN": "gh"}
    assert credentials_for("ghcr.io", gh) == Credentials("octo", "gh")
    assert credentials_for("quay.io", gh) is None
    assert credentials_for("127.0.0.1:5000", {}) is None


def test_a_password_never_shows_in_the_credentials_repr() -> None:
    assert "s3cret" not in repr(Credentials("bot", "s3cret"))


def test_a_transient_fault_is_retried_until_it_succeeds() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientRegistryError("HTTP 503")
        return "ok"

    assert call_with_retry(flaky, FAST, sleep=sleeps.append) == "ok"
    assert len(calls) == 3
    assert len(sleeps) == 2 and all(0 < s <= 0.06 for s in sleeps)


def test_the_retry_budget_ends_with_the_last_error() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise TransientRegistryError("HTTP 503")

    with pytest.raises(TransientRegistryError, match="503"):
        call_with_retry(down, FAST, sleep=lambda _: None)
    assert len(calls) == FAST.attempts


def test_a_permanent_error_is_not_retried() -> None:
    calls: list[int] = []

    def denied() -> None:
        calls.append(1)
        raise AuthError("HTTP 401")

    with pytest.raises(AuthError):
        call_with_retry(denied, FAST, sleep=lambda _: None)
    assert calls == [1]


def test_retry_settings_are_validated() -> None:
    assert RetryPolicy.from_mapping({"attempts": "2", "max_seconds": "3"}) == RetryPolicy(
        attempts=2, max_seconds=3.0
    )
    with pytest.raises(RegistryError, match="unknown key 'tries'"):
        RetryPolicy.from_mapping({"tries": 3})
    with pytest.raises(RegistryError):
        RetryPolicy.from_mapping({"attempts": 0})


def test_an_index_lists_its_platforms_without_attestations() -> None:
    body = json.dumps(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"digest": "sha256:1", "platform": {"os": "linux", "architecture": "amd64"}},
                {
                    "digest": "sha256:2",
                    "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
                },
                {
                    "digest": "sha256:3",
                    "platform": {"os": "unknown", "architecture": "unknown"},
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                },
            ],
        }
    ).encode()
    manifest = Manifest(digest_of(body), "application/vnd.oci.image.index.v1+json", body)
    assert manifest.is_index
    assert manifest.platforms() == ["linux/amd64", "linux/arm/v7"]
    assert manifest.images() == {"linux/amd64": "sha256:1", "linux/arm/v7": "sha256:2"}
    assert manifest.attestations() == ["sha256:3"]


# --- against the real registry ---


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A two-platform index pushed to a scratch repository: (repository, digest)."""
    import subprocess
    import uuid

    scratch_repo = f"127.0.0.1:5000/test/{uuid.uuid4().hex[:12]}"
    ref = f"{scratch_repo}:one"
    digest = build_image(ref, tmp_path_factory.mktemp("image"))
    try:
        subprocess.run(["docker", "push", "--quiet", ref], check=True, capture_output=True)
    finally:
        remove_images(ref)
    return parse_reference(scratch_repo).repository, digest


@pytest.mark.engine
def test_the_client_reads_writes_and_lists_manifests(
    registry: str, pushed: tuple[str, str]
) -> None:
    repo, digest = pushed
    client = RegistryClient(registry, retry=FAST)
    client.ping()
    index = client.manifest(repo, "one")
    assert index.digest == digest and index.is_index
    assert index.platforms() == ["linux/amd64", "linux/arm64"]
    assert client.put_manifest(repo, "two", index) == digest
    assert client.digest(repo, "two") == digest
    assert client.digest(repo, "missing") is None
    assert sorted(client.tags(repo)) == ["one", "two"]
    config = client.image_config(repo, digest, "linux/arm64")
    assert config["architecture"] == "arm64"


@pytest.mark.engine
def test_an_unknown_repository_has_no_tags_and_its_manifest_is_not_found(registry: str) -> None:
    client = RegistryClient(registry, retry=FAST)
    assert client.tags("test/does-not-exist") == []
    with pytest.raises(NotFoundError, match="not found"):
        client.manifest("test/does-not-exist", "v1")


@pytest.mark.engine
@pytest.mark.parametrize(("mode", "status"), [("reset", 0), ("status", 503), ("status", 429)])
def test_transient_faults_are_retried_through_the_proxy(
    pushed: tuple[str, str], mode: str, status: int
) -> None:
    repo, digest = pushed
    with FaultProxy(mode=mode, count=2, status=status or 503) as proxy:
        client = RegistryClient(proxy.address, retry=FAST)
        assert client.digest(repo, "one") == digest
        assert proxy.faults == 2
        assert proxy.connections == 3


@pytest.mark.engine
def test_a_stalled_registry_times_out_and_is_retried(pushed: tuple[str, str]) -> None:
    repo, digest = pushed
    with FaultProxy(mode="stall", count=1) as proxy:
        client = RegistryClient(proxy.address, retry=FAST, timeout=0.5)
        assert client.digest(repo, "one") == digest
        assert proxy.faults == 1


@pytest.mark.engine
def test_past_the_budget_the_error_is_one_clear_line(pushed: tuple[str, str]) -> None:
    repo, _ = pushed
    with FaultProxy(mode="status", count=-1, status=503) as proxy:
        client = RegistryClient(proxy.address, retry=FAST)
        with pytest.raises(TransientRegistryError) as caught:
            client.manifest(repo, "one")
        assert proxy.connections == FAST.attempts
    line = caught.value.one_line()
    assert "\n" not in line
    assert line == (
        f"read {proxy.address}/{repo}:one: the registry answered HTTP 503 Service Unavailable "
        "(injected fault) (gave up after 4 attempts)"
    )


@pytest.mark.engine
@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthError), (403, AuthError), (404, NotFoundError)]
)
def test_401_403_and_404_are_not_retried(
    pushed: tuple[str, str], status: int, error: type[RegistryError]
) -> None:
    repo, _ = pushed
    with FaultProxy(mode="status", count=-1, status=status) as proxy:
        client = RegistryClient(proxy.address, retry=FAST)
        with pytest.raises(error):
            client.manifest(repo, "one")
        assert proxy.connections == 1


@pytest.mark.engine
def test_a_registry_that_is_down_is_one_line_after_the_budget() -> None:
    with FaultProxy() as proxy:
        address = proxy.address
    client = RegistryClient(address, retry=FAST)
    with pytest.raises(TransientRegistryError) as caught:
        client.ping()
    assert caught.value.one_line() == (
        f"ping the registry: connection refused: is the registry at {address} up? "
        "(gave up after 4 attempts)"
    )


# --- the Bearer token flow (as ghcr.io does it), against a tiny fake registry ---


BLOB = b'{"architecture":"amd64"}'


class TokenRegistry(http.server.BaseHTTPRequestHandler):
    """``/v2/...`` wants a Bearer token; ``/token`` hands one out for Basic bot:s3cret."""

    hits: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        auth = self.headers.get("Authorization", "")
        if self.path.startswith("/token"):
            good = "Basic " + base64.b64encode(b"bot:s3cret").decode()
            if auth != good:
                self._send(401, b'{"errors":[{"message":"bad credentials"}]}')
            else:
                self._send(200, b'{"token":"t0k3n"}')
            return
        if self.path == "/storage/blob":  # object storage: no registry credentials, please
            self._send(400 if auth else 200, BLOB)
            return
        if auth != "Bearer t0k3n":
            port = self.server.server_address[1]
            challenge = (
                f'Bearer realm="http://127.0.0.1:{port}/token",service="fake",'
                'scope="repository:acme/app:pull"'
            )
            self._send(401, b"{}", {"WWW-Authenticate": challenge})
            return
        if "/blobs/" in self.path:
            port = self.server.server_address[1]
            self._send(307, b"", {"Location": f"http://localhost:{port}/storage/blob"})
            return
        self._send(200, b'{"name":"acme/app","tags":["v1"]}')

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def token_registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    TokenRegistry.hits.clear()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_bearer_challenge_is_answered_with_a_token_from_the_realm(token_registry: str) -> None:
    client = RegistryClient(token_registry, credentials=Credentials("bot", "s3cret"), retry=FAST)
    assert client.tags("acme/app") == ["v1"]
    assert client.tags("acme/app") == ["v1"]
    assert [h.split("?")[0] for h in TokenRegistry.hits] == [
        "/v2/acme/app/tags/list",
        "/token",
        "/v2/acme/app/tags/list",
        "/v2/acme/app/tags/list",
    ]
    assert "scope=repository%3Aacme%2Fapp%3Apull" in TokenRegistry.hits[1]


def test_wrong_credentials_are_one_line_and_not_retried(token_registry: str) -> None:
    client = RegistryClient(token_registry, credentials=Credentials("bot", "nope"), retry=FAST)
    with pytest.raises(AuthError) as caught:
        client.tags("acme/app")
    assert caught.value.one_line() == (
        f"list the tags of {token_registry}/acme/app: the registry refused the credentials "
        "(HTTP 401): check REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)"
    )
    assert "nope" not in caught.value.one_line()
    assert len([h for h in TokenRegistry.hits if h.startswith("/token")]) == 1


def test_a_blob_redirect_to_another_host_does_not_carry_the_token(token_registry: str) -> None:
    client = RegistryClient(token_registry, credentials=Credentials("bot", "s3cret"), retry=FAST)
    assert client.blob("acme/app", digest_of(BLOB)) == BLOB
    assert TokenRegistry.hits[-1] == "/storage/blob"


@pytest.mark.parametrize(
    ("extra", "environ", "expected"),
    [
        ({}, {}, RetryPolicy()),
        ({"retry": {"attempts": 3}}, {}, RetryPolicy(attempts=3)),
        (
            {"retry": {"attempts": 3, "max_seconds": 20}},
            {"REGISTRY_RETRY_ATTEMPTS": "7", "REGISTRY_RETRY_SECONDS": "5"},
            RetryPolicy(attempts=7, max_seconds=5.0),
        ),
        ({"retry": {"attempts": 3}}, {"REGISTRY_RETRY_ATTEMPTS": ""}, RetryPolicy(attempts=3)),
    ],
)
def test_the_retry_policy_comes_from_settings_then_the_environment(
    extra: dict[str, Any], environ: dict[str, str], expected: RetryPolicy
) -> None:
    assert retry_policy(extra, environ) == expected


def test_a_client_for_a_host_takes_its_credentials_and_retries_from_what_it_is_given() -> None:
    client = client_for(
        "ghcr.io",
        extra={"retry": {"attempts": 2}},
        environ={"GITHUB_TOKEN": "t0ken", "GITHUB_ACTOR": "octo"},
    )
    assert client.credentials == Credentials("octo", "t0ken")
    assert client.retry == RetryPolicy(attempts=2)
    assert client_for("127.0.0.1:5000", extra={}, environ={}).credentials is None
