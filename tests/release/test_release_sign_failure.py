"""release.sign: a failed signature says whether the key or the registry is at fault."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy, cosign_keys
from tinyimages import tiny_image

from pipeline.oci.reference import parse_reference
from pipeline.registry.client import RegistryClient
from pipeline.registry.retry import RetryPolicy
from pipeline.release.sign import SigningError, config_from_env, sign, sign_failure

ONCE = RetryPolicy(attempts=2, max_seconds=20, initial=0.01, max_wait=0.02, jitter=0.0)


@pytest.mark.parametrize(
    ("stderr", "cause", "hint"),
    [
        (
            "Error: signing: getting signer: reading key: decrypt: encrypted: decryption failed",
            "the key or its password was refused",
            "check COSIGN_KEY and COSIGN_PASSWORD",
        ),
        (
            "Error: PUT https://ghcr.io/v2/a/manifests/sha256-x.sig: "
            "unexpected status code 503 Service Unavailable",
            "the registry failed",
            "the registry is failing (not the key): run it again later",
        ),
        (
            "Error: GET https://ghcr.io/token: UNAUTHORIZED: authentication required",
            "the registry refused the login",
            "check REGISTRY_USERNAME/REGISTRY_PASSWORD",
        ),
    ],
)
def test_a_failed_signature_names_the_key_the_login_or_the_registry(
    stderr: str, cause: str, hint: str
) -> None:
    assert sign_failure(stderr) == (cause, hint)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", 5000)) as p:
        yield p


@pytest.mark.engine
def test_a_503_while_signing_blames_the_registry_not_the_key(
    proxy: FaultProxy, registry: str, tmp_path: Path
) -> None:
    repo = f"test/{uuid.uuid4().hex[:12]}"
    digest = tiny_image(RegistryClient(registry), repo, "signed").digest
    keys = cosign_keys(tmp_path / "keys")
    proxy.configure("status", -1, 503)
    ref = parse_reference(f"{proxy.address}/{repo}").with_digest(digest)
    with pytest.raises(SigningError) as caught:
        sign(ref, config_from_env({**os.environ, **keys}), retry=ONCE)
    line = caught.value.one_line()
    assert line.startswith(f"cosign could not sign {ref}: the registry failed (")
    assert line.endswith(": the registry is failing (not the key): run it again later")
    assert "COSIGN_PASSWORD" not in line
