"""``deploy.k8s`` and ``deploy.rollback``: the environment's digest from the registry history,
rendered pinned, checked against the cluster, diffed, applied server-side, waited for; a failed
rollout puts the environment back on its previous digest (the history ``docker.rollback`` uses)
and applies that.

Everything comes in built once at the edge: ``Kube`` (kubectl, the target context, the
environment kubectl runs with, where output goes) and ``EnvHistory`` (the registry client, the
repository, the signature check). Nothing here reads ``os.environ``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from pipeline.deploy import k8s
from pipeline.deploy.kubectl import (
    APPLYSET_ENV,
    DeployPlan,
    Facts,
    Target,
    current_context,
    facts,
    missing_secrets,
    plan_deploy,
    secrets_check,
)
from pipeline.errors import CommandError, PipelineError, UsageError, last_line
from pipeline.oci.reference import Reference
from pipeline.proc import run
from pipeline.release import promote as history
from pipeline.release.promote import NoHistoryError, Promotion, Verifier

if TYPE_CHECKING:
    from pipeline.registry.client import RegistryClient

Runner = Callable[..., Any]
Out = Callable[[str], None]
KUBECTL_HINT = "install kubectl (Debian/Ubuntu: apt-get install kubectl) and put it on PATH"


class ContextMismatchError(UsageError):
    """kubectl's current context is not the environment's."""


class MissingSecretsError(UsageError):
    """The namespace lacks a Secret the pods need."""


class RolloutFailedError(PipelineError):
    """The new pods never became ready; what was done about it is in the message."""


@dataclass(frozen=True)
class Kube:
    """kubectl as one run uses it: built once at the edge."""

    target: Target
    environ: Mapping[str, str]
    kubectl: str = "kubectl"
    runner: Runner = run
    out: Out = print

    def call(
        self,
        argv: Sequence[str],
        *,
        what: str,
        timeout: float = 60,
        ok: Collection[int] = (0,),
        applyset: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.environ, **APPLYSET_ENV} if applyset else self.environ
        done: subprocess.CompletedProcess[str] = self.runner(
            argv, env=env, what=what, hint="", timeout=timeout, ok=ok
        )
        return done


class History(Protocol):
    """An environment's digests: what it points at, and moving it (recorded)."""

    @property
    def image(self) -> Reference:  # the repository
        ...

    def current(self) -> str | None: ...
    def resolve(self, ref: str) -> str: ...
    def promote(self, digest: str) -> Promotion: ...
    def roll_back(self, to: str | None = None) -> Promotion: ...


@dataclass(frozen=True)
class EnvHistory:
    """An environment's digests in the registry, through ``pipeline.release.promote``."""

    client: RegistryClient
    image: Reference  # the repository
    env: str
    verified: Verifier
    allowed: Sequence[str] = history.DEFAULT_ENVIRONMENTS
    log: Out = print

    def current(self) -> str | None:
        return self.client.digest(self.image.repository, self.env)

    def resolve(self, ref: str) -> str:
        return history.resolve(self.client, self.image, ref).digest

    def promote(self, digest: str) -> Promotion:
        return history.promote(self.client, self.image, self.env, digest, **self._checks())

    def roll_back(self, to: str | None = None) -> Promotion:
        return history.rollback(self.client, self.image, self.env, to, **self._checks())

    def _checks(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "verified": self.verified, "log": self.log}


@dataclass(frozen=True)
class Request:
    """One deploy or rollback: the manifests, where renders go, and the flags."""

    k8s_dir: Path
    out_dir: Path
    image: str | None = None  # --image: a tag or digest of the history's repository
    dry_run: bool = False
    timeout_s: int | None = None


def check_context(kube: Kube) -> None:
    """kubectl's current context must be the environment's: one line naming both if not."""
    env, wanted = kube.target.env, kube.target.context
    try:
        done = kube.call(current_context(kube.kubectl), what="kubectl config current-context")
    except CommandError as exc:
        if exc.returncode is None:
            raise CommandError(exc.message, argv=exc.argv, hint=KUBECTL_HINT) from None
        where = kube.environ.get("KUBECONFIG")
        raise k8s.ClusterError(
            "no Kubernetes cluster configured: kubectl has no current context"
            + (f" (KUBECONFIG={where})" if where else ""),
            hint=f"{env} deploys to the context {wanted!r}: `kubectl config use-context {wanted}`",
        ) from None
    current = done.stdout.strip()
    if current != wanted:
        raise ContextMismatchError(
            f"kubectl's current context is {current!r}, but {env} deploys to {wanted!r}",
            hint=f"`kubectl config use-context {wanted}` first (or, if {current!r} is {env}'s"
            f" cluster, pass --context {current})",
        )


def prepare(kube: Kube, request: Request, image: Reference) -> tuple[Facts, DeployPlan]:
    """Render the overlay with ``image`` pinned, read its facts, plan the cluster calls."""
    rendered = k8s.render(
        request.k8s_dir,
        kube.target.env,
        image,
        request.out_dir,
        kubectl=kube.kubectl,
        runner=kube.runner,
    )
    found = facts(k8s.load_documents(rendered.path.read_text(encoding="utf-8")), kube.target)
    plan = plan_deploy(
        kube.target, found, rendered.path, timeout_s=request.timeout_s, kubectl=kube.kubectl
    )
    return found, plan


def check_secrets(kube: Kube, found: Facts) -> None:
    """The Secrets the pods mount exist in the namespace: one line naming those that do not."""
    argv = secrets_check(kube.target, found, kube.kubectl)
    if not argv:
        return
    listed = kube.call(argv, what=f"kubectl get secret -n {found.namespace}").stdout
    missing = missing_secrets(found, listed)
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise MissingSecretsError(
            f"namespace {found.namespace} ({kube.target.context}) has no Secret{plural}"
            f" {', '.join(missing)}",
            hint="create them before deploying (README: Kubernetes)",
        )


def show_diff(kube: Kube, plan: DeployPlan) -> bool:
    """Print ``kubectl diff`` (1: differences, not a failure); True when there are some."""
    done = kube.call(plan.diff, what="kubectl diff", timeout=120, ok=(0, 1))
    if done.returncode == 0:
        kube.out("diff: no changes")
        return False
    kube.out(done.stdout.rstrip("\n"))
    return True


def apply_and_wait(kube: Kube, plan: DeployPlan) -> str | None:
    """Apply, then wait for the rollout; None when it rolled out, else why it did not (a
    refused apply may have changed some objects: it is a failed rollout too)."""
    try:
        applied = kube.call(plan.apply, what="kubectl apply", timeout=300, applyset=True)
    except CommandError as exc:
        return f"kubectl apply: {last_line(exc.stderr) or exc.message}"
    if applied.stdout.strip():
        kube.out(applied.stdout.rstrip("\n"))
    try:
        done = kube.call(plan.rollout, what="kubectl rollout status", timeout=plan.wait_s + 30)
    except CommandError as exc:
        return last_line(exc.stderr) or exc.message
    if done.stdout.strip():
        kube.out(done.stdout.rstrip("\n"))
    return None


def _preflight(kube: Kube, request: Request) -> None:
    """The context, then the Secrets, from the overlay rendered without a pin (nothing in
    the registry moves before these pass)."""
    check_context(kube)
    overlay = k8s.kustomize(
        k8s.overlay_dir(request.k8s_dir, kube.target.env),
        kubectl=kube.kubectl,
        runner=kube.runner,
    )
    check_secrets(kube, facts(k8s.load_documents(overlay), kube.target))


def deploy(request: Request, kube: Kube, envs: History) -> str:
    """``deploy.k8s``: the environment's digest (or ``--image``, promoted first), diffed,
    applied, waited for; on a failed rollout, rolled back. Returns the deployed digest."""
    _preflight(kube, request)
    digest = envs.resolve(request.image) if request.image else envs.current()
    if digest is None:
        raise UsageError(
            f"nothing is promoted to {kube.target.env} in {envs.image.name}",
            hint=f"run `invoke docker.promote --to {kube.target.env}`, or pass --image REF",
        )
    found, plan = prepare(kube, request, envs.image.with_digest(digest))
    kube.out(f"deploying {envs.image.name}@{digest} to {found.namespace} ({kube.target.context})")
    show_diff(kube, plan)
    if request.dry_run:
        kube.out("dry run: nothing applied")
        return digest
    if request.image:
        envs.promote(digest)
    failure = apply_and_wait(kube, plan)
    if failure:
        _recover(request, kube, envs, digest, failure)
    kube.out(f"deployed {envs.image.name}@{digest} to {found.namespace} ({kube.target.context})")
    return digest


def _recover(request: Request, kube: Kube, envs: History, bad: str, why: str) -> NoReturn:
    """After a failed rollout of ``bad``: the environment back on its previous digest, that
    applied and waited for; then one line saying so."""
    env = kube.target.env
    failed = f"rollout of {bad} to {env} failed ({why})"
    try:
        back = envs.roll_back()
        _, plan = prepare(kube, request, envs.image.with_digest(back.digest))
        again = apply_and_wait(kube, plan)
    except NoHistoryError:
        raise RolloutFailedError(
            f"{failed}; {env} has no earlier digest to roll back to",
            hint=f"fix the image, then deploy again (docker.rollback --env {env} --to DIGEST)",
        ) from None
    except PipelineError as exc:
        raise RolloutFailedError(f"{failed}; rolling back failed too ({exc.one_line()})") from None
    if again:
        raise RolloutFailedError(
            f"{failed}; rolled {env} back to {back.digest}, whose rollout failed too ({again})"
        )
    raise RolloutFailedError(f"{failed}: rolled {env} back from {bad} to {back.digest}")


def rollback(request: Request, kube: Kube, envs: History, to: str | None = None) -> Promotion:
    """``deploy.rollback``: the environment pointed back in the registry (its previous digest,
    or ``to``), then that rendered, applied and waited for."""
    _preflight(kube, request)
    back = envs.roll_back(to)
    found, plan = prepare(kube, request, envs.image.with_digest(back.digest))
    show_diff(kube, plan)
    failure = apply_and_wait(kube, plan)
    moved = f"{kube.target.env} from {back.previous or 'unset'} to {back.digest}"
    if failure:
        raise RolloutFailedError(f"rolled {moved}, but its rollout failed ({failure})")
    kube.out(f"rolled back {moved} ({found.namespace}, {kube.target.context})")
    return back
