"""``deploy.render``, ``deploy.k8s`` and ``deploy.rollback`` end to end: the kustomize directory
(a bad ``--env`` said before anything runs), the image pinned by digest, kubectl."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.config import Settings
from pipeline.deploy import k8s


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


def deploy_env(
    env: str,
    image: str | None,
    out: str | None,
    *,
    context: str | None,
    timeout_s: int,
    root: Path,
    settings: Settings,
    environ: Mapping[str, str],
) -> str:
    """Render, apply with kubectl, wait for the rollout; the line to print."""
    k8s_dir(root, settings, env)
    used = k8s.require_cluster(context=context, env=environ)
    rendered = render_env(env, image, out, root=root, settings=settings)
    k8s.apply(rendered.path, context=context, env=environ, timeout_s=timeout_s)
    return f"deployed {rendered.image} to {rendered.namespace} ({used})"


def rollback_env(
    env: str,
    *,
    context: str | None,
    revision: int | None,
    timeout_s: int,
    root: Path,
    settings: Settings,
    environ: Mapping[str, str],
) -> str:
    """Undo the environment's last rollout (or go to ``revision``); the line to print."""
    directory = k8s_dir(root, settings, env)
    used = k8s.require_cluster(context=context, env=environ)
    namespace = k8s.overlay_namespace(directory, env)
    k8s.rollback(namespace, context=context, env=environ, to_revision=revision, timeout_s=timeout_s)
    return f"rolled back deployment/gateway in {namespace} ({used})"
