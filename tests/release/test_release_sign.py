"""docker.sign: cosign by digest, keys only through the environment, verification."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from faultproxy import cosign_keys, push_image

from pipeline.oci.reference import parse_reference
from pipeline.release.sign import (
    SignConfig,
    SigningError,
    UnsignedError,
    config_from_env,
    cosign_runner,
    require_signed,
    sign,
    sign_argv,
    verify,
    verify_argv,
)

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "c" * 64
PEM = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n-----END ...-----\n"


def test_a_key_in_the_environment_is_passed_by_name_never_by_value() -> None:
    config = config_from_env({"COSIGN_KEY": PEM, "COSIGN_PASSWORD": "pw"})
    ref = parse_reference(f"127.0.0.1:5000/acme/app@{DIGEST}")
    argv = sign_argv(ref, config)
    assert argv == [
        "cosign",
        "sign",
        "--yes",
        "--key",
        "env://COSIGN_KEY",
        "--tlog-upload=false",
        "--allow-insecure-registry",
        "--allow-http-registry",
        f"127.0.0.1:5000/acme/app@{DIGEST}",
    ]
    assert not any(a == "pw" or "PRIVATE KEY" in a for a in argv)


def test_a_public_registry_is_signed_with_the_transparency_log() -> None:
    config = config_from_env({"COSIGN_KEY": "/keys/cosign.key"})
    argv = sign_argv(parse_reference(f"ghcr.io/acme/app@{DIGEST}"), config)
    assert argv == [
        "cosign",
        "sign",
        "--yes",
        "--key",
        "/keys/cosign.key",
        f"ghcr.io/acme/app@{DIGEST}",
    ]


def test_in_actions_without_a_key_signing_is_keyless_through_the_oidc_token() -> None:
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token",
        "GITHUB_REPOSITORY": "acme/app",
        "GITHUB_SERVER_URL": "https://github.com",
    }
    config = config_from_env(env)
    assert config.mode == "keyless"
    ref = parse_reference(f"ghcr.io/acme/app@{DIGEST}")
    assert sign_argv(ref, config)[:5] == [
        "cosign",
        "sign",
        "--yes",
        "--oidc-provider",
        "github-actions",
    ]
    argv = verify_argv(ref, config, "")
    assert (
        argv[argv.index("--certificate-identity-regexp") + 1] == r"^https://github\.com/acme/app/"
    )
    assert (
        argv[argv.index("--certificate-oidc-issuer") + 1]
        == "https://token.actions.githubusercontent.com"
    )


def test_without_a_key_outside_actions_signing_is_refused() -> None:
    config = config_from_env({})
    assert config.mode == "none"
    with pytest.raises(SigningError, match="no signing key"):
        sign_argv(parse_reference(f"ghcr.io/acme/app@{DIGEST}"), config)


def test_signing_by_tag_is_refused() -> None:
    with pytest.raises(SigningError, match="sign by digest"):
        sign_argv(parse_reference("ghcr.io/acme/app:latest"), SignConfig(key="k"))


def test_a_loopback_registry_is_verified_without_the_transparency_log() -> None:
    ref = parse_reference(f"127.0.0.1:5000/acme/app@{DIGEST}")
    assert verify_argv(ref, SignConfig(key="k"), "/k.pub") == [
        "cosign",
        "verify",
        "--output",
        "json",
        "--key",
        "/k.pub",
        "--insecure-ignore-tlog=true",
        "--allow-insecure-registry",
        "--allow-http-registry",
        f"127.0.0.1:5000/acme/app@{DIGEST}",
    ]


def test_verification_derives_the_public_key_from_the_private_one_through_the_environment() -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def runner(argv: Sequence[str], env: Mapping[str, str] | None) -> str:
        calls.append((list(argv), dict(env or {})))
        return "PUBLIC PEM" if argv[1] == "public-key" else '[{"critical": {}}]'

    config = config_from_env({"COSIGN_KEY": PEM, "COSIGN_PASSWORD": "pw"})
    assert verify(parse_reference(f"127.0.0.1:5000/a@{DIGEST}"), config, runner=runner) is True
    assert calls[0][0] == ["cosign", "public-key", "--key", "env://COSIGN_KEY"]
    assert "--key" in calls[1][0]
    assert calls[1][0][calls[1][0].index("--key") + 1] == "env://COSIGN_DERIVED_PUBLIC_KEY"
    assert calls[1][1]["COSIGN_DERIVED_PUBLIC_KEY"] == "PUBLIC PEM"


# --- with cosign against the real registry ---


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return cosign_keys(tmp_path_factory.mktemp("keys"))


@pytest.mark.engine
def test_a_signed_digest_verifies_and_only_with_its_key(
    scratch_repo: str, tmp_path: Path, keys: dict[str, str]
) -> None:
    digest = push_image(f"{scratch_repo}:one", tmp_path)
    ref = parse_reference(scratch_repo).with_digest(digest)
    config = config_from_env({**os.environ, **keys})
    assert verify(ref, config) is False
    sign(ref, config)
    assert verify(ref, config) is True
    other = cosign_keys(tmp_path / "other")
    assert verify(ref, config_from_env({"COSIGN_PUBLIC_KEY": other["COSIGN_PUBLIC_KEY"]})) is False
    only_public = config_from_env({"COSIGN_PUBLIC_KEY": keys["COSIGN_PUBLIC_KEY"]})
    assert verify(ref, only_public) is True


@pytest.mark.engine
def test_a_wrong_password_fails_in_one_line(
    scratch_repo: str, tmp_path: Path, keys: dict[str, str]
) -> None:
    digest = push_image(f"{scratch_repo}:one", tmp_path)
    ref = parse_reference(scratch_repo).with_digest(digest)
    config = config_from_env({**os.environ, **keys, "COSIGN_PASSWORD": "wrong"})
    with pytest.raises(SigningError) as caught:
        sign(ref, config)
    line = caught.value.one_line()
    assert line.startswith(f"cosign could not sign {ref}: the key or its password was refused (")
    assert "\n" not in line and "wrong" not in caught.value.argv


@pytest.mark.engine
def test_an_unsigned_digest_is_refused(
    scratch_repo: str, tmp_path: Path, keys: dict[str, str]
) -> None:
    digest = push_image(f"{scratch_repo}:one", tmp_path)
    ref = parse_reference(scratch_repo).with_digest(digest)
    with pytest.raises(UnsignedError, match="is not signed"):
        require_signed(ref, config_from_env({**os.environ, **keys}), runner=cosign_runner)


@pytest.mark.engine
def test_the_sign_task_signs_by_digest_and_verify_checks(
    scratch_repo: str, tmp_path: Path, keys: dict[str, str]
) -> None:
    digest = push_image(f"{scratch_repo}:one", tmp_path)
    env = {**os.environ, **keys}

    def task(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )

    unsigned = task("docker.sign", "--verify", "--ref", f"{scratch_repo}:one")
    assert unsigned.returncode == 1
    assert unsigned.stderr == (
        f"error: {scratch_repo}@{digest} is not signed (no valid signature for the configured "
        "key): sign it first: `invoke docker.sign`\n"
    )
    signed = task("docker.sign", "--ref", f"{scratch_repo}:one")
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout == f"signed {scratch_repo}@{digest} (key)\n"
    verified = task("docker.sign", "--verify", "--ref", f"{scratch_repo}@{digest}")
    assert verified.stdout == f"verified {scratch_repo}@{digest}\n"


def test_the_signing_config_never_prints_its_secrets() -> None:
    config = config_from_env({"COSIGN_KEY": PEM, "COSIGN_PASSWORD": "pw-secret"})
    assert "pw-secret" not in repr(config) and "PRIVATE KEY" not in repr(config)


def test_a_transient_registry_fault_while_signing_is_retried_and_a_bad_key_is_not() -> None:
    from pipeline.errors import CommandError
    from pipeline.registry.retry import RetryPolicy

    fast = RetryPolicy(attempts=3, max_seconds=5, initial=0.01, max_wait=0.02, jitter=0.0)
    ref = parse_reference(f"127.0.0.1:5000/a@{DIGEST}")
    config = config_from_env({"COSIGN_KEY": PEM, "COSIGN_PASSWORD": "pw"})
    calls: list[str] = []

    def flaky(argv: Sequence[str], env: Mapping[str, str] | None) -> str:
        calls.append(argv[1])
        if len(calls) == 1:
            raise CommandError("cosign sign failed", stderr="PUT .../manifests: EOF")
        return ""

    sign(ref, config, runner=flaky, retry=fast)
    assert calls == ["sign", "sign"]

    def bad_password(argv: Sequence[str], env: Mapping[str, str] | None) -> str:
        calls.append(argv[1])
        raise CommandError("x", stderr="Error: decrypt: encrypted: decryption failed")

    calls.clear()
    with pytest.raises(SigningError, match="cosign could not sign"):
        sign(ref, config, runner=bad_password, retry=fast)
    assert calls == ["sign"]
