"""Kubernetes: render the kustomize overlays with the image pinned by digest and check the
result. Rendering is offline (``kubectl kustomize``); what talks to a cluster is
``pipeline.deploy.rollout`` (its kubectl calls: ``pipeline.deploy.kubectl``).
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import RegistryError, UsageError
from pipeline.oci.reference import Reference, parse_reference
from pipeline.proc import run

ENVIRONMENTS: tuple[str, ...] = ("staging", "production")
#: The image name the base uses as a placeholder; the render replaces it with ``name@digest``.
PLACEHOLDER = "gateway"
DEPLOYMENT = "gateway"
CONTAINER = "gateway"
CONFIG_KEY = "gateway.toml"
KUBECTL_HINT = "install kubectl (Debian/Ubuntu: apt-get install kubectl) and put it on PATH"

Runner = Callable[..., Any]
Lookup = Callable[[str], str]


class ClusterError(UsageError):
    """No Kubernetes cluster is configured for kubectl."""


def parse_image(ref: str) -> Reference:
    """``--image``: an image reference (``oci.reference``'s parser), errors said as flag errors."""
    try:
        return parse_reference(ref)
    except RegistryError as exc:
        raise UsageError(f"--image {ref!r}: {exc.message}", hint="e.g. ghcr.io/o/r:1.2.3") from None


def resolve_digest(ref: str, *, lookup: Lookup | None = None) -> Reference:
    """The reference pinned to its digest: as given if it has one, otherwise the registry's
    digest for the tag (the image index for a multi-platform image), from the engine's one
    digest lookup (``lookup`` stands in for it in tests)."""
    image = parse_image(ref)
    if image.digest:
        return image
    if lookup is None:
        from pipeline.engine.imagetools import index_digest

        lookup = index_digest
    return image.with_digest(lookup(str(image)))


def overlay_dir(k8s_dir: Path, env: str) -> Path:
    if env not in ENVIRONMENTS:
        raise UsageError(f"--env {env!r}: expected one of {', '.join(ENVIRONMENTS)}")
    path = k8s_dir / "overlays" / env
    if not (path / "kustomization.yaml").is_file():
        raise UsageError(f"{path}: no kustomization.yaml")
    return path


def kustomize(directory: Path, *, kubectl: str = "kubectl", runner: Runner = run) -> str:
    """``kubectl kustomize DIR``: the rendered YAML stream."""
    done = runner(
        [kubectl, "kustomize", str(directory)],
        what=f"kubectl kustomize {directory.name}",
        hint=KUBECTL_HINT,
        timeout=120,
    )
    return str(done.stdout)


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_overlay(
    k8s_dir: Path, env: str, image: Reference, *, kubectl: str = "kubectl", runner: Runner = run
) -> str:
    """The overlay rendered with the gateway image set to ``name@digest`` (through kustomize's
    image transformer, in a throw-away kustomization on top of the overlay)."""
    overlay = overlay_dir(k8s_dir, env).resolve()
    if not image.digest:
        raise UsageError(f"{image.name}: the render pins images by digest; none given")
    with tempfile.TemporaryDirectory(prefix="k8s-render-") as tmp:
        wrapper = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(overlay, tmp)],
            "images": [{"name": PLACEHOLDER, "newName": image.name, "digest": image.digest}],
        }
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(wrapper), encoding="utf-8")
        return kustomize(Path(tmp), kubectl=kubectl, runner=runner)


def find(docs: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def check_manifests(docs: Sequence[Mapping[str, Any]], image: str) -> list[str]:
    """What is wrong with rendered manifests (empty: nothing): the image pin, the security
    settings, probes, resources, the companions (Service, PDB, HPA, ConfigMap), and the
    termination grace period against the gateway's drain time."""
    problems: list[str] = []
    deployments = find(docs, "Deployment")
    if len(deployments) != 1:
        return [f"expected one Deployment, found {len(deployments)}"]
    deployment = deployments[0]
    spec = deployment.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    pod_sc = pod.get("securityContext", {})
    if pod_sc.get("runAsNonRoot") is not True:
        problems.append("pod: securityContext.runAsNonRoot is not true")
    if pod_sc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("pod: no seccompProfile (RuntimeDefault or Localhost)")
    containers = {c.get("name"): c for c in pod.get("containers", [])}
    container = containers.get(CONTAINER)
    if container is None:
        return [*problems, f"no container named {CONTAINER!r}"]
    if container.get("image") != image:
        problems.append(f"container image is {container.get('image')!r}, expected {image!r}")
    if not re.search(r"@sha256:[0-9a-f]{64}$", str(container.get("image", ""))):
        problems.append("container image is not pinned by digest")
    sc = container.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("container: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("container: allowPrivilegeEscalation is not false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
        problems.append("container: capabilities are not drop [ALL] with nothing added")
    problems += _check_probes(container)
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        for what in ("cpu", "memory"):
            if what not in resources.get(part, {}):
                problems.append(f"container: no resources.{part}.{what}")
    problems += _check_companions(docs, deployment, pod_labels)
    problems += _check_termination(docs, pod, container)
    return problems


def _check_probes(container: Mapping[str, Any]) -> list[str]:
    """Readiness and liveness are HTTP GETs of /readyz and /healthz on the admin port (the
    gateway serves them only there); a startup probe, if any, on the admin port too."""
    problems: list[str] = []
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    admin = {"admin", ports.get("admin")} - {None}
    wanted = (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", ""))
    for probe, path in wanted:
        get = container.get(probe, {}).get("httpGet", {})
        if path and get.get("path") != path:
            problems.append(f"container: {probe} is not an HTTP GET of {path}")
        elif get and get.get("port") not in admin:
            problems.append(f"container: {probe} is not on the admin port ({get.get('port')})")
    return problems


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _check_companions(
    docs: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any], pod_labels: Mapping[str, Any]
) -> list[str]:
    problems: list[str] = []
    name = deployment.get("metadata", {}).get("name")
    services = find(docs, "Service")
    if not any(_selects(s.get("spec", {}).get("selector", {}), pod_labels) for s in services):
        problems.append("no Service selects the gateway pods")
    pdbs = find(docs, "PodDisruptionBudget")
    if not any(_selects(p.get("spec", {}).get("selector", {}), pod_labels) for p in pdbs):
        problems.append("no PodDisruptionBudget selects the gateway pods")
    hpas = find(docs, "HorizontalPodAutoscaler")
    if not any(h.get("spec", {}).get("scaleTargetRef", {}).get("name") == name for h in hpas):
        problems.append("no HorizontalPodAutoscaler scales the Deployment")
    return problems


def gateway_config(
    docs: Sequence[Mapping[str, Any]], pod: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """The ConfigMap the pod mounts and its parsed ``gateway.toml``, if any."""
    names = {
        v.get("configMap", {}).get("name") for v in pod.get("volumes", []) if v.get("configMap")
    }
    for cm in find(docs, "ConfigMap"):
        cm_name = cm.get("metadata", {}).get("name")
        text = cm.get("data", {}).get(CONFIG_KEY)
        if cm_name in names and text is not None:
            return str(cm_name), tomllib.loads(text)
    return None


def drain_timeout(config: Mapping[str, Any]) -> float:
    """``[server] drain_timeout``, with the gateway's default (gateway/config.py)."""
    return float(config.get("server", {}).get("drain_timeout", 10.0))


def _check_termination(
    docs: Sequence[Mapping[str, Any]], pod: Mapping[str, Any], container: Mapping[str, Any]
) -> list[str]:
    found = gateway_config(docs, pod)
    if found is None:
        return [f"no ConfigMap with {CONFIG_KEY} is mounted by the pod"]
    _, config = found
    drain = drain_timeout(config)
    pre_stop = float(
        container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    )
    grace = float(pod.get("terminationGracePeriodSeconds", 30))
    if grace < pre_stop + drain:
        return [
            f"terminationGracePeriodSeconds {grace:g} < preStop sleep {pre_stop:g}"
            f" + drain_timeout {drain:g}: pods would be killed mid-drain"
        ]
    if grace > pre_stop + drain + 15:
        return [
            f"terminationGracePeriodSeconds {grace:g} is far above preStop sleep {pre_stop:g}"
            f" + drain_timeout {drain:g}: a stuck pod lingers"
        ]
    return []


@dataclass(frozen=True)
class Rendered:
    env: str
    path: Path
    image: str
    namespace: str


def render(
    k8s_dir: Path,
    env: str,
    image: Reference,
    out_dir: Path,
    *,
    kubectl: str = "kubectl",
    runner: Runner = run,
) -> Rendered:
    """Render, check and write ``out_dir/<env>.yaml``; nothing is written if a check fails."""
    text = render_overlay(k8s_dir, env, image, kubectl=kubectl, runner=runner)
    docs = load_documents(text)
    problems = check_manifests(docs, image.pinned)
    if problems:
        raise UsageError(
            f"{env} manifests: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint=f"fix {k8s_dir}",
        )
    namespace = str(find(docs, "Deployment")[0].get("metadata", {}).get("namespace", "default"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{env}.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return Rendered(env=env, path=path, image=image.pinned, namespace=namespace)


def image_for(image: str | None, record_path: Path, *, lookup: Lookup | None = None) -> Reference:
    """``--image`` (a tag is resolved to its digest), else the pushed digest the build record
    at ``record_path`` holds."""
    from pipeline.build.record import BuildRecord

    if image:
        return resolve_digest(image, lookup=lookup)
    record = BuildRecord.read(record_path)
    if not (record.pushed and record.digest):
        raise UsageError(
            f"{record_path} records no pushed digest",
            hint="push the image (invoke docker.publish) or pass --image REF",
        )
    return resolve_digest(f"{record.image}@{record.digest}", lookup=lookup)
