"""``deploy.render``, ``deploy.k8s`` and ``deploy.rollback`` end to end: the kustomize directory
(a bad ``--env`` said before anything runs), the image pinned by digest, kubectl."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.config import Settings
from pipeline.deploy import k8s, rollout
from pipeline.deploy.kubectl import target_for
from pipeline.release.promote import environments


def k8s_dir(root: Path, settings: Settings, env: str) -> Path:
    """The kustomize directory; a bad ``env`` is said before anything else runs."""
    directory = root / settings.path_or_name("k8s_dir", "docker/k8s")
    k8s.overlay_dir(directory, env)
    return directory


def render_env(
    env: str, image: str | None, out: str | None, *, root: Path, settings: Settings
) -> k8s.Rendered:
    """The overlay rendered with ``image`` (or the recorded pushed digest) pinned by digest."""
    directory = k8s_dir(root, settings, env)
    manifests = Path(out) if out else root / settings.path_or_name("manifests_dir", "build/k8s")
    return k8s.render(directory, env, k8s.image_for(image, root / settings.record), manifests)


def render_lines(rendered: k8s.Rendered) -> list[str]:
    return [
        f"rendered {rendered.env}: {rendered.path}",
        f"  image: {rendered.image}",
        f"  namespace: {rendered.namespace}",
    ]


@dataclass(frozen=True)
class ClusterRequest:
    """The flags of ``deploy.k8s`` and ``deploy.rollback``."""

    env: str
    image: str | None = None  # deploy: a tag or digest to promote first; rollback: the repository
    to: str | None = None  # rollback: the tag or digest to go back to
    out: str | None = None
    context: str | None = None
    timeout: int | None = None
    dry_run: bool = False


@contextmanager
def kubeconfig(environ: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """kubectl's environment: ``KUBECONFIG_DATA`` (a kubeconfig's text, as CI secrets hold it)
    written to a private temporary file for the task's calls and removed after, unless
    ``KUBECONFIG`` already names one."""
    env = dict(environ)
    data = env.pop("KUBECONFIG_DATA", "")
    if not data or env.get("KUBECONFIG"):
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="kubeconfig-") as tmp:
        path = Path(tmp) / "config"
        path.touch(mode=0o600)
        path.write_text(data, encoding="utf-8")
        yield {**env, "KUBECONFIG": str(path)}


def _cluster(
    request: ClusterRequest, root: Path, settings: Settings, environ: Mapping[str, str]
) -> tuple[rollout.Request, rollout.Kube, rollout.EnvHistory]:
    """What a cluster task needs, built once: the paths, kubectl pinned to the environment's
    context, and the environment's history in the registry."""
    from pipeline.oci.reference import parse_reference
    from pipeline.registry.client import client_for
    from pipeline.release.sign import verifier_from_env

    target = k8s.parse_image(request.image) if request.image else parse_reference(settings.image)
    deploy_settings = settings.extra.get("deploy") or {}
    kube = rollout.Kube(target_for(deploy_settings, request.env, request.context), environ)
    envs = rollout.EnvHistory(
        client_for(target.host, extra=settings.extra, environ=environ),
        target,
        request.env,
        verified=lambda ref: verifier_from_env(environ)(ref),  # a key only when one is needed
        allowed=environments(settings.extra.get("environments")),
    )
    out = (
        Path(request.out)
        if request.out
        else root / settings.path_or_name("manifests_dir", "build/k8s")
    )
    plan = rollout.Request(
        k8s_dir(root, settings, request.env),
        out,
        image=request.image,
        dry_run=request.dry_run,
        timeout_s=int(request.timeout or 0) or None,
    )
    return plan, kube, envs


def deploy_env(
    request: ClusterRequest, *, root: Path, settings: Settings, environ: Mapping[str, str]
) -> str:
    """``deploy.k8s``: diff, server-side apply (pruned), wait; a failed rollout rolls back.
    Returns the deployed digest."""
    with kubeconfig(environ) as env:
        return rollout.deploy(*_cluster(request, root, settings, env))


def rollback_env(
    request: ClusterRequest, *, root: Path, settings: Settings, environ: Mapping[str, str]
) -> str:
    """``deploy.rollback``: the environment pointed back in the registry history (or to
    ``to``), then applied and waited for. Returns the digest it runs now."""
    with kubeconfig(environ) as env:
        plan, kube, envs = _cluster(request, root, settings, env)
        return rollout.rollback(replace(plan, image=None), kube, envs, request.to).digest
