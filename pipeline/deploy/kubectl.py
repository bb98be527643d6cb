"""What ``deploy.k8s`` and ``deploy.rollback`` ask of kubectl, as argv lists: pure, table-tested.

The environment's target (its kubectl context, and the namespace its overlay must render into)
comes from ``[tool.pipeline.deploy.<env>]``; the facts the calls need (namespace, Deployment,
the Secrets the pods mount, the progress deadline) come from the rendered manifests.

Pruning: kubectl 1.27+ refuses its legacy ``--prune -l ... --prune-allowlist`` together with
``--server-side`` ("--prune is in alpha and doesn't currently work on objects created by
server-side apply"), and legacy pruning only ever deletes objects carrying the client-side
``last-applied-configuration`` annotation. Server-side apply prunes with an ApplySet instead
(``--prune --applyset``, alpha behind ``KUBECTL_APPLYSET=true`` since 1.27): kubectl labels
each applied object as a member and deletes members that a later apply no longer contains.
The ApplySet's parent is one ConfigMap per namespace, so each environment prunes only its own
set; kubectl forbids ``-l`` and ``--prune-allowlist`` beside ``--applyset``, so the scope is kept
here instead: a render is refused unless every object carries the gateway's labels
(``part-of=api-gateway``, ``instance=<env>``) and is of a kind in ``PRUNABLE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError

FIELD_MANAGER = "api-gateway-pipeline"
#: The ApplySet parent (``kubectl apply --applyset``), in the environment's namespace.
APPLYSET = "configmaps/api-gateway-applyset"
APPLYSET_ENV = {"KUBECTL_APPLYSET": "true"}
PART_OF = "app.kubernetes.io/part-of"
INSTANCE = "app.kubernetes.io/instance"
GATEWAY = "api-gateway"
#: The kinds a render may hold, and so the only kinds the ApplySet can ever prune.
PRUNABLE = frozenset(
    {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",  # only as the overlay's secretGenerator makes it (hashed, labelled)
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "HTTPRoute",
        "Ingress",
    }
)
#: Kubernetes' default progressDeadlineSeconds, and what ``rollout status`` waits beyond it.
DEFAULT_DEADLINE_S = 600
ROLLOUT_MARGIN_S = 60
LIST_NAMES = ("--ignore-not-found", "-o", "name")


@dataclass(frozen=True)
class Target:
    """Where an environment deploys: its kubectl context and, if pinned, its namespace."""

    env: str
    context: str
    namespace: str = ""


def target_for(settings: Mapping[str, Any], env: str, context: str | None = None) -> Target:
    """The environment's target from ``[tool.pipeline.deploy]`` (``settings``), ``--context``
    overriding its ``context``. An environment without a context is a usage error."""
    table = settings.get(env) or {}
    if not hasattr(table, "get"):  # a TOML table (or Invoke's view of one)
        raise UsageError(f"[tool.pipeline.deploy.{env}]: expected a table")
    chosen = (context or str(table.get("context") or "")).strip()
    if not chosen:
        raise UsageError(
            f"no kubectl context for {env}",
            hint=f'set [tool.pipeline.deploy.{env}] context = "NAME", or pass --context NAME',
        )
    return Target(env=env, context=chosen, namespace=str(table.get("namespace") or "").strip())


@dataclass(frozen=True)
class Facts:
    """What the kubectl calls need from a render."""

    namespace: str
    deployment: str
    secrets: tuple[str, ...]
    deadline_s: int


def _labels(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    return doc.get("metadata", {}).get("labels") or {}


def scope_problems(docs: Sequence[Mapping[str, Any]], env: str) -> list[str]:
    """Objects that the prune scope would not cover: a kind outside ``PRUNABLE``, or missing
    the gateway's ``part-of`` / ``instance`` labels."""
    problems = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        labels = _labels(doc)
        if doc.get("kind") not in PRUNABLE:
            problems.append(f"{name}: kind not in the prune allowlist")
        elif labels.get(PART_OF) != GATEWAY or labels.get(INSTANCE) != env:
            problems.append(f"{name}: not labelled {PART_OF}={GATEWAY},{INSTANCE}={env}")
    return problems


def required_secrets(pod: Mapping[str, Any], generated: set[str]) -> tuple[str, ...]:
    """The Secrets a pod needs that the render does not make: its image pull secrets and its
    secret volumes, sorted."""
    names = {str(s.get("name")) for s in pod.get("imagePullSecrets") or []}
    names |= {
        str(v["secret"].get("secretName")) for v in pod.get("volumes") or [] if v.get("secret")
    }
    return tuple(sorted(names - generated))


def facts(docs: Sequence[Mapping[str, Any]], target: Target) -> Facts:
    """The namespace, Deployment, required Secrets and progress deadline of a render, after
    checking it against the target (its namespace) and the prune scope."""
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    if len(deployments) != 1:
        raise UsageError(f"{target.env} render: expected one Deployment, found {len(deployments)}")
    deployment = deployments[0]
    meta, spec = deployment.get("metadata", {}), deployment.get("spec", {})
    namespace = str(meta.get("namespace") or "default")
    if target.namespace and namespace != target.namespace:
        raise UsageError(
            f"{target.env} renders into namespace {namespace!r}, not {target.namespace!r}",
            hint=f"fix the overlay or [tool.pipeline.deploy.{target.env}] namespace",
        )
    problems = scope_problems(docs, target.env)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{target.env} render: {problems[0]}{more}", hint="fix the overlay")
    generated = {str(d["metadata"].get("name")) for d in docs if d.get("kind") == "Secret"}
    return Facts(
        namespace=namespace,
        deployment=str(meta.get("name")),
        secrets=required_secrets(spec.get("template", {}).get("spec", {}), generated),
        deadline_s=int(spec.get("progressDeadlineSeconds", DEFAULT_DEADLINE_S)),
    )


def rollout_timeout(facts: Facts, override: int | None = None) -> int:
    """Seconds ``rollout status`` waits: past the Deployment's progress deadline, so kubectl
    sees the controller give up (ProgressDeadlineExceeded) rather than time out first."""
    return int(override) if override else facts.deadline_s + ROLLOUT_MARGIN_S


def current_context(kubectl: str = "kubectl") -> list[str]:
    return [kubectl, "config", "current-context"]


def secrets_check(target: Target, facts: Facts, kubectl: str = "kubectl") -> list[str]:
    """``kubectl get secret`` of the Secrets the pods need (none: no call, ``[]``)."""
    if not facts.secrets:
        return []
    base = [kubectl, "--context", target.context]
    return [*base, "get", "secret", *facts.secrets, "-n", facts.namespace, *LIST_NAMES]


@dataclass(frozen=True)
class DeployPlan:
    """The cluster calls of one deploy, in order, each pinned to the target's context, and
    how long the rollout may take."""

    secrets: list[str]
    diff: list[str]
    apply: list[str]
    rollout: list[str]
    wait_s: int

    def argvs(self) -> list[list[str]]:
        return [argv for argv in (self.secrets, self.diff, self.apply, self.rollout) if argv]


def plan_deploy(
    target: Target,
    facts: Facts,
    manifest: Path,
    *,
    timeout_s: int | None = None,
    kubectl: str = "kubectl",
) -> DeployPlan:
    """Pure: check the Secrets, diff, server-side apply with ApplySet pruning, wait for the
    rollout (``timeout_s``, else past the progress deadline)."""
    base = [kubectl, "--context", target.context]
    server_side = ["--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts"]
    prune = ["--prune", f"--applyset={APPLYSET}"]
    namespace = ["-n", facts.namespace]
    wait_s = rollout_timeout(facts, timeout_s)
    wait = f"--timeout={wait_s}s"
    return DeployPlan(
        secrets=secrets_check(target, facts, kubectl),
        diff=[*base, "diff", *server_side, "-f", str(manifest)],
        apply=[*base, "apply", *server_side, *prune, *namespace, "-f", str(manifest)],
        rollout=[*base, "rollout", "status", f"deployment/{facts.deployment}", *namespace, wait],
        wait_s=wait_s,
    )


def missing_secrets(facts: Facts, listed: str) -> list[str]:
    """The required Secrets that ``kubectl get secret ... -o name`` did not list."""
    found = {line.strip().removeprefix("secret/") for line in listed.splitlines()}
    return [name for name in facts.secrets if name not in found]
