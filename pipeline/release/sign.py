"""``docker.sign``: cosign signatures, always by digest.

With a key: ``COSIGN_KEY`` (the PEM itself, or a path/KMS URI) and ``COSIGN_PASSWORD`` reach
cosign through its environment, never argv. Keyless: in GitHub Actions with no key, through the
workflow's OIDC token (``--oidc-provider github-actions``). A loopback (private, plain HTTP)
registry is signed without a transparency log and verified with ``--insecure-ignore-tlog``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.build.record import pushed_digest
from pipeline.config import Settings
from pipeline.errors import CommandError, PipelineError
from pipeline.oci.reference import Reference, is_loopback, parse_reference
from pipeline.proc import run
from pipeline.registry.client import client_for
from pipeline.registry.dockerauth import docker_env
from pipeline.registry.retry import RetryPolicy, call_with_retry, is_transient

ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"


class SigningError(CommandError):
    """cosign could not sign, or a signature does not verify."""


class UnsignedError(PipelineError):
    """The digest carries no valid signature: it may not be promoted."""


@dataclass(frozen=True)
class SignConfig:
    """How to sign and verify, decided once at the edge from the environment.

    ``key`` is what cosign's ``--key`` takes (``env://COSIGN_KEY`` when the PEM is in the
    environment); ``public_key`` the same for verification (``env://COSIGN_PUBLIC_KEY``, a
    path, or derived from the private key). Keyless needs ``identity`` (a regexp of the
    workflow identity) and ``issuer``.
    """

    key: str = ""
    public_key: str = ""
    keyless: bool = False
    identity: str = ""
    issuer: str = ACTIONS_ISSUER
    env: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return "keyless" if self.keyless else "key" if self.key or self.public_key else "none"


def config_from_env(environ: Mapping[str, str]) -> SignConfig:
    """The signing mode for these variables: a key anywhere, keyless in Actions, else none."""
    env = dict(environ)
    key = ""
    raw = environ.get("COSIGN_KEY", "").strip()
    if raw:
        key = "env://COSIGN_KEY" if raw.startswith("-----BEGIN") else raw
    public = ""
    raw_pub = environ.get("COSIGN_PUBLIC_KEY", "").strip()
    if raw_pub:
        public = "env://COSIGN_PUBLIC_KEY" if raw_pub.startswith("-----BEGIN") else raw_pub
    keyless = not key and not public and bool(environ.get("ACTIONS_ID_TOKEN_REQUEST_URL"))
    identity = ""
    if keyless:
        server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        repo = environ.get("GITHUB_REPOSITORY", "")
        identity = f"^{re.escape(server)}/{re.escape(repo)}/" if repo else ".*"
    return SignConfig(key=key, public_key=public, keyless=keyless, identity=identity, env=env)


def _registry_flags(ref: Reference) -> list[str]:
    if is_loopback(ref.host):
        return ["--allow-insecure-registry", "--allow-http-registry"]
    return []


def sign_argv(ref: Reference, config: SignConfig) -> list[str]:
    """Pure: the cosign command that signs ``ref`` (which must carry a digest)."""
    if not ref.digest:
        raise SigningError(f"{ref}: sign by digest, not by tag", hint="push first")
    argv = ["cosign", "sign", "--yes"]
    if config.keyless:
        argv += ["--oidc-provider", "github-actions"]
    elif config.key:
        argv += ["--key", config.key]
    else:
        raise SigningError(
            "no signing key: set COSIGN_KEY and COSIGN_PASSWORD, or run in GitHub Actions "
            "with `id-token: write` for keyless signing"
        )
    if is_loopback(ref.host):
        argv += ["--tlog-upload=false"]
    return [*argv, *_registry_flags(ref), str(ref)]


def verify_argv(ref: Reference, config: SignConfig, public_key: str) -> list[str]:
    """Pure: the cosign command that verifies ``ref``."""
    argv = ["cosign", "verify", "--output", "json"]
    if config.keyless and not public_key:
        argv += [
            "--certificate-identity-regexp",
            config.identity or ".*",
            "--certificate-oidc-issuer",
            config.issuer,
        ]
    elif public_key:
        argv += ["--key", public_key]
    else:
        raise SigningError(
            "no public key to verify with: set COSIGN_PUBLIC_KEY (or COSIGN_KEY and "
            "COSIGN_PASSWORD)"
        )
    if is_loopback(ref.host):
        argv += ["--insecure-ignore-tlog=true"]
    return [*argv, *_registry_flags(ref), str(ref)]


Runner = Callable[[Sequence[str], Mapping[str, str] | None], str]


def cosign_runner(argv: Sequence[str], env: Mapping[str, str] | None) -> str:
    return run(argv, env=docker_env(env), error=SigningError, what=" ".join(argv[:2])).stdout


def sign(
    ref: Reference,
    config: SignConfig,
    *,
    runner: Runner = cosign_runner,
    retry: RetryPolicy | None = None,
) -> None:
    """Sign ``ref`` (by digest); secrets only in the environment. Transient registry faults
    (reset, EOF, 429, 5xx in cosign's stderr) are retried."""
    argv = sign_argv(ref, config)

    def attempt() -> None:
        try:
            runner(argv, config.env)
        except CommandError as exc:
            cause, hint = sign_failure(exc.stderr)
            kind = _TransientSigningError if cause == REGISTRY_FAULT else SigningError
            raise kind(
                f"cosign could not sign {ref}" + (f": {cause}" if cause else ""),
                argv=exc.argv,
                stderr=exc.stderr,
                hint=hint,
            ) from None

    try:
        call_with_retry(attempt, retry or RetryPolicy(), retry_on=(_TransientSigningError,))
    except _TransientSigningError as exc:
        raise SigningError(exc.message, argv=exc.argv, stderr=exc.stderr, hint=exc.hint) from None


class _TransientSigningError(SigningError):
    pass


REGISTRY_FAULT = "the registry failed"
_KEY = re.compile(r"decrypt|password|passphrase|reading key|private key|pem|cosign\.key", re.I)
_LOGIN = re.compile(r"unauthorized|denied|forbidden|\b401\b|\b403\b", re.I)


def sign_failure(stderr: str) -> tuple[str, str]:
    """Pure: why cosign failed to sign, from its stderr, and the fix: the key or its password,
    the registry login, or a registry fault (retried, then reported as such)."""
    if _KEY.search(stderr):
        return "the key or its password was refused", "check COSIGN_KEY and COSIGN_PASSWORD"
    if _LOGIN.search(stderr):
        return "the registry refused the login", "check REGISTRY_USERNAME/REGISTRY_PASSWORD"
    if is_transient(stderr):
        return REGISTRY_FAULT, "the registry is failing (not the key): run it again later"
    return "", "check COSIGN_KEY/COSIGN_PASSWORD and the registry login"


def verify(ref: Reference, config: SignConfig, *, runner: Runner = cosign_runner) -> bool:
    """Whether ``ref`` carries a signature valid for the configured key or identity."""
    env = dict(config.env or {})
    public = config.public_key
    if not public and config.key:
        derived = runner(["cosign", "public-key", "--key", config.key], env)
        env["COSIGN_DERIVED_PUBLIC_KEY"] = derived
        public = "env://COSIGN_DERIVED_PUBLIC_KEY"
    try:
        out = runner(verify_argv(ref, config, public), env)
    except SigningError as exc:
        if _no_signature(exc.stderr):
            return False
        raise
    try:
        data = json.loads(out or "[]")
    except ValueError:
        return False
    return isinstance(data, list) and len(data) > 0


def require_signed(ref: Reference, config: SignConfig, *, runner: Runner = cosign_runner) -> None:
    if not verify(ref, config, runner=runner):
        raise UnsignedError(
            f"{ref} is not signed (no valid signature for the configured key)",
            hint="sign it first: `invoke docker.sign`",
        )


def _no_signature(stderr: str) -> bool:
    text = stderr.lower()
    return any(
        s in text
        for s in (
            "no signatures found",
            "no matching signatures",
            "invalid signature",
            "signature not found",
            "none of the expected identities",
        )
    )


def verifier_from_env(environ: Mapping[str, str]) -> Callable[[Reference], bool]:
    """A signature check for promote/rollback from ``COSIGN_*`` in ``environ`` (or keyless in
    Actions); ``UsageError`` when there is nothing to verify with."""
    from pipeline.errors import UsageError

    config = config_from_env(environ)
    if config.mode == "none":
        raise UsageError(
            "no key to verify signatures with",
            hint="set COSIGN_PUBLIC_KEY (or COSIGN_KEY and COSIGN_PASSWORD)",
        )
    return lambda ref: verify(ref, config)


def sign_image(
    ref: str | None,
    record_path: Path,
    *,
    settings: Settings,
    environ: Mapping[str, str],
    verify_only: bool = False,
) -> str:
    """``docker.sign``: the given reference (a tag is resolved to its digest) or the record's
    pushed digest, signed (or, ``verify_only``, checked); the line to print."""
    if ref:
        target = parse_reference(ref)
    else:
        image, digest = pushed_digest(record_path, hint="run `invoke docker.push` first")
        target = parse_reference(image).with_digest(digest)
    if not target.digest:
        client = client_for(target.host, extra=settings.extra, environ=environ)
        target = target.with_digest(client.manifest(target.repository, target.tag).digest)
    config = config_from_env(environ)
    if verify_only:
        require_signed(target, config)
        return f"verified {target}"
    sign(target, config)
    return f"signed {target} ({config.mode})"
