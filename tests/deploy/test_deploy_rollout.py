"""deploy.k8s and deploy.rollback against the kubectl stand-in (tests/deploy/conftest.py): the
context check, the Secrets check, diff, apply and rollout in order with their exact argv, and a
failed rollout rolled back to the environment's previous digest in the registry history."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faultproxy import cosign_keys

from pipeline.deploy import rollout
from pipeline.deploy.kubectl import Target
from pipeline.errors import PipelineError, UsageError
from pipeline.oci.manifest import Manifest
from pipeline.oci.reference import Reference, parse_reference
from pipeline.registry.client import RegistryClient, RetryPolicy
from pipeline.release.promote import NoHistoryError, Promotion, history_tags
from pipeline.release.sign import config_from_env, sign
from tests.conftest import ROOT
from tests.deploy.conftest import CONTEXT, DEADLINE, ROLLED_OUT, StandIn

K8S = ROOT / "docker" / "k8s"
NS = "api-gateway-staging"
REPO = "127.0.0.1:5000/acme/api-gateway"
A, B = ("sha256:" + x * 64 for x in "ab")
ON = ["kubectl", "--context", CONTEXT]
SSA = ["--server-side", "--field-manager=api-gateway-pipeline", "--force-conflicts"]
PRUNE = ["--prune", "--applyset=configmaps/api-gateway-applyset"]
NAMES = ["--ignore-not-found", "-o", "name"]
FAST = RetryPolicy(attempts=3, max_seconds=10, initial=0.01, max_wait=0.05, jitter=0.01)


def expected_calls(manifest: Path) -> dict[str, list[str]]:
    """Every cluster call of a staging deploy, by name, with its exact argv."""
    return {
        "context": ["kubectl", "config", "current-context"],
        "secrets": [*ON, "get", "secret", "api-gateway-keys", "ghcr-pull", "-n", NS, *NAMES],
        "diff": [*ON, "diff", *SSA, "-f", str(manifest)],
        "apply": [*ON, "apply", *SSA, *PRUNE, "-n", NS, "-f", str(manifest)],
        "rollout": [*ON, "rollout", "status", "deployment/gateway", "-n", NS, "--timeout=660s"],
    }


@dataclass
class FakeHistory:
    """The environment's history without a registry: digests oldest first, the last current."""

    digests: list[str] = field(default_factory=list)
    image: Reference = field(default_factory=lambda: parse_reference(REPO))

    def current(self) -> str | None:
        return self.digests[-1] if self.digests else None

    def resolve(self, ref: str) -> str:
        return ref.rpartition("@")[2]

    def promote(self, digest: str) -> Promotion:
        previous = self.current()
        self.digests.append(digest)
        return Promotion("staging", digest, previous, "staging-h", previous != digest)

    def roll_back(self, to: str | None = None) -> Promotion:
        current = self.current()
        target = to or next((d for d in reversed(self.digests) if d != current), None)
        if target is None:
            raise NoHistoryError("no earlier digest")
        return self.promote(target)


@dataclass
class Run:
    kube: rollout.Kube
    request: rollout.Request
    printed: list[str]

    @property
    def manifest(self) -> Path:
        return self.request.out_dir / "staging.yaml"


@pytest.fixture
def run(kubectl: StandIn, tmp_path: Path) -> Run:
    printed: list[str] = []
    kube = rollout.Kube(Target("staging", CONTEXT, NS), kubectl.environ, out=printed.append)
    return Run(kube, rollout.Request(K8S, tmp_path / "k8s"), printed)


def test_a_deploy_checks_context_and_secrets_then_diffs_applies_and_waits_in_order(
    kubectl: StandIn, run: Run
) -> None:
    assert rollout.deploy(run.request, run.kube, FakeHistory([A])) == A
    calls = expected_calls(run.manifest)
    assert kubectl.calls() == [calls[k] for k in ("context", "secrets", "diff", "apply", "rollout")]
    applyset = {r["key"]: r["KUBECTL_APPLYSET"] for r in kubectl.records()}
    assert applyset == {k: None for k in applyset} | {"apply": "true"}
    assert [r["images"] for r in kubectl.records() if r["key"] in ("diff", "apply")] == [
        [f"{REPO}@{A}"],
        [f"{REPO}@{A}"],
    ]
    assert run.printed == [
        f"deploying {REPO}@{A} to {NS} ({CONTEXT})",
        "-  image: old\n+  image: new",
        "deployment.apps/gateway serverside-applied",
        ROLLED_OUT.strip(),
        f"deployed {REPO}@{A} to {NS} ({CONTEXT})",
    ]


def test_a_wrong_context_is_refused_with_one_line_naming_both_before_any_other_call(
    kubectl: StandIn, run: Run
) -> None:
    kubectl.answer("config current-context", {"stdout": "acme-production\n"})
    history = FakeHistory([A])
    with pytest.raises(rollout.ContextMismatchError) as caught:
        rollout.deploy(run.request, run.kube, history)
    assert caught.value.exit_code == 2
    assert caught.value.one_line() == (
        "kubectl's current context is 'acme-production', but staging deploys to 'acme-staging':"
        " `kubectl config use-context acme-staging` first (or, if 'acme-production' is"
        " staging's cluster, pass --context acme-production)"
    )
    assert kubectl.calls() == [["kubectl", "config", "current-context"]]
    assert history.digests == [A]


def test_dry_run_stops_after_printing_the_diff(kubectl: StandIn, run: Run) -> None:
    request = rollout.Request(K8S, run.request.out_dir, image=f"{REPO}@{B}", dry_run=True)
    history = FakeHistory([A])
    assert rollout.deploy(request, run.kube, history) == B
    assert [r["key"] for r in kubectl.records()] == ["config current-context", "get secret", "diff"]
    assert run.printed[-2:] == ["-  image: old\n+  image: new", "dry run: nothing applied"]
    assert history.digests == [A]  # nothing promoted


def test_no_differences_is_said_and_the_deploy_goes_on(kubectl: StandIn, run: Run) -> None:
    kubectl.answer("diff", {"rc": 0})
    rollout.deploy(run.request, run.kube, FakeHistory([A]))
    assert "diff: no changes" in run.printed
    assert [r["key"] for r in kubectl.records()][-2:] == ["apply", "rollout status"]


def test_a_diff_that_fails_stops_the_deploy_before_any_apply(kubectl: StandIn, run: Run) -> None:
    kubectl.answer("diff", {"rc": 2, "stderr": "error: the server has asked for credentials\n"})
    with pytest.raises(PipelineError) as caught:
        rollout.deploy(run.request, run.kube, FakeHistory([A]))
    assert caught.value.one_line() == (
        "kubectl diff failed with exit code 2 (error: the server has asked for credentials)"
    )
    assert "apply" not in [r["key"] for r in kubectl.records()]


@pytest.mark.parametrize(
    ("listed", "missing"),
    [
        ("secret/ghcr-pull\n", "Secret api-gateway-keys"),
        ("", "Secrets api-gateway-keys, ghcr-pull"),
    ],
)
def test_missing_secrets_are_one_line_and_nothing_is_applied(
    kubectl: StandIn, run: Run, listed: str, missing: str
) -> None:
    kubectl.answer("get secret", {"stdout": listed})
    with pytest.raises(rollout.MissingSecretsError) as caught:
        rollout.deploy(run.request, run.kube, FakeHistory([A]))
    assert caught.value.one_line() == (
        f"namespace {NS} ({CONTEXT}) has no {missing}: create them before deploying"
        " (README: Kubernetes)"
    )
    assert [r["key"] for r in kubectl.records()] == ["config current-context", "get secret"]


def test_a_deploy_with_image_promotes_it_after_the_diff_and_before_the_apply(
    kubectl: StandIn, run: Run
) -> None:
    history = FakeHistory([A])
    request = rollout.Request(K8S, run.request.out_dir, image=f"{REPO}:1.2.3@{B}")
    assert rollout.deploy(request, run.kube, history) == B
    assert history.digests == [A, B]
    assert [r["images"] for r in kubectl.records() if r["key"] == "apply"] == [[f"{REPO}@{B}"]]


def test_nothing_promoted_and_no_image_is_a_usage_error(kubectl: StandIn, run: Run) -> None:
    with pytest.raises(UsageError) as caught:
        rollout.deploy(run.request, run.kube, FakeHistory([]))
    assert caught.value.one_line() == (
        f"nothing is promoted to staging in {REPO}: run `invoke docker.promote --to staging`,"
        " or pass --image REF"
    )


def test_a_failed_rollout_without_an_earlier_digest_says_so_in_one_line(
    kubectl: StandIn, run: Run
) -> None:
    kubectl.answer("rollout status", {"rc": 1, "stderr": DEADLINE})
    with pytest.raises(rollout.RolloutFailedError) as caught:
        rollout.deploy(run.request, run.kube, FakeHistory([A]))
    assert caught.value.one_line() == (
        f"rollout of {A} to staging failed ({DEADLINE.strip()}); staging has no earlier digest"
        " to roll back to: fix the image, then deploy again"
        " (docker.rollback --env staging --to DIGEST)"
    )


# --- with the registry's history (a scratch repository on 127.0.0.1:5000) ---


def push_tiny_image(client: RegistryClient, repository: str, n: int) -> str:
    """A minimal image (a config, no layers) tagged ``build-<n>``; its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": [f"N={n}"]}})
    body = config.encode()
    config_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    client.upload_blob(repository, config_digest, body)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(body),
            },
            "layers": [],
        }
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    media = "application/vnd.oci.image.manifest.v1+json"
    return client.put_manifest(repository, f"build-{n}", Manifest(digest, media, manifest))


@pytest.fixture
def registry_history(registry: str, scratch_repo: str) -> tuple[rollout.EnvHistory, str, str]:
    """staging promoted to a first image, a second one pushed: (history, first, second)."""
    image = parse_reference(scratch_repo)
    client = RegistryClient(registry, retry=FAST)
    first, second = (push_tiny_image(client, image.repository, n) for n in (1, 2))
    history = rollout.EnvHistory(
        client, image, "staging", verified=lambda ref: True, log=lambda _: None
    )
    history.promote(first)
    return history, first, second


def recorded(history: rollout.EnvHistory) -> list[str | None]:
    client, repository = history.client, history.image.repository
    return [client.digest(repository, t) for t in history_tags("staging", client.tags(repository))]


@pytest.mark.engine
def test_a_failed_rollout_rolls_back_to_the_previous_digest_in_the_registry_history(
    kubectl: StandIn, run: Run, registry_history: tuple[rollout.EnvHistory, str, str]
) -> None:
    history, good, bad = registry_history
    name = history.image.name
    kubectl.answer("rollout status", {"rc": 1, "stderr": DEADLINE}, {"stdout": ROLLED_OUT})
    request = rollout.Request(K8S, run.request.out_dir, image=f"{name}@{bad}")
    with pytest.raises(rollout.RolloutFailedError) as caught:
        rollout.deploy(request, run.kube, history)
    assert caught.value.exit_code == 1
    assert caught.value.one_line() == (
        f"rollout of {bad} to staging failed ({DEADLINE.strip()}):"
        f" rolled staging back from {bad} to {good}"
    )
    calls = expected_calls(run.manifest)
    order = ("context", "secrets", "diff", "apply", "rollout", "apply", "rollout")
    assert kubectl.calls() == [calls[k] for k in order]
    applied = [r["images"] for r in kubectl.records() if r["key"] == "apply"]
    assert applied == [[f"{name}@{bad}"], [f"{name}@{good}"]]
    assert history.current() == good  # the next deploy.k8s without --image deploys good
    assert recorded(history) == [good, bad, good]


@pytest.mark.engine
def test_deploy_rollback_points_the_environment_back_then_applies_that_pinned(
    kubectl: StandIn, run: Run, registry_history: tuple[rollout.EnvHistory, str, str]
) -> None:
    history, first, second = registry_history
    history.promote(second)
    back = rollout.rollback(run.request, run.kube, history)
    assert (back.previous, back.digest) == (second, first)
    assert history.current() == first
    calls = expected_calls(run.manifest)
    assert kubectl.calls() == [calls[k] for k in ("context", "secrets", "diff", "apply", "rollout")]
    assert [r["images"] for r in kubectl.records() if r["key"] == "apply"] == [
        [f"{history.image.name}@{first}"]
    ]
    assert run.printed[-1] == (f"rolled back staging from {second} to {first} ({NS}, {CONTEXT})")
    again = rollout.rollback(run.request, run.kube, history, to=second)
    assert again.digest == second
    assert recorded(history) == [first, second, first, second]


# --- through invoke ---


def _invoke(
    kubectl: StandIn, *args: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env={**kubectl.environ, "KUBECONFIG": os.devnull, **(environ or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("task", ["deploy.k8s", "deploy.rollback"])
def test_the_tasks_refuse_a_wrong_context_with_one_line_and_exit_2(
    kubectl: StandIn, tmp_path: Path, task: str
) -> None:
    kubectl.answer("config current-context", {"stdout": "kind-kind\n"})
    done = _invoke(kubectl, task, "--env", "production")
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            "error: kubectl's current context is 'kind-kind', but production deploys to"
            " 'acme-production': `kubectl config use-context acme-production` first (or, if"
            " 'kind-kind' is production's cluster, pass --context kind-kind)"
        ],
    )
    assert kubectl.calls() == [["kubectl", "config", "current-context"]]


def test_the_context_flag_overrides_the_setting(kubectl: StandIn, tmp_path: Path) -> None:
    kubectl.answer("config current-context", {"stdout": "kind-kind\n"})
    kubectl.answer("get secret", {"stdout": ""})
    done = _invoke(kubectl, "deploy.k8s", "--env", "staging", "--context", "kind-kind")
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "error: namespace api-gateway-staging (kind-kind) has no Secrets api-gateway-keys,"
        " ghcr-pull: create them before deploying (README: Kubernetes)",
    )
    assert kubectl.calls()[1][:3] == ["kubectl", "--context", "kind-kind"]


@pytest.mark.parametrize("task", ["deploy.k8s", "deploy.rollback"])
def test_without_a_cluster_the_tasks_fail_with_one_line_naming_the_context(
    tmp_path: Path, task: str
) -> None:
    """The real kubectl, with a kubeconfig that does not exist: nothing rendered."""
    missing = tmp_path / "no-kubeconfig"
    done = subprocess.run(
        [sys.executable, "-m", "invoke", task, "--env", "staging"],
        cwd=ROOT,
        env={**os.environ, "KUBECONFIG": str(missing)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (done.returncode, done.stderr.splitlines()) == (
        2,
        [
            "error: no Kubernetes cluster configured: kubectl has no current context"
            f" (KUBECONFIG={missing}): staging deploys to the context 'acme-staging':"
            " `kubectl config use-context acme-staging`"
        ],
    )
    assert list(tmp_path.iterdir()) == []


def test_a_refused_apply_is_a_failed_rollout_and_rolled_back_too(
    kubectl: StandIn, run: Run
) -> None:
    refused = 'Error from server (Forbidden): admission webhook "policy" denied the request'
    kubectl.answer("apply", {"rc": 1, "stderr": refused + "\n"}, {"stdout": "applied\n"})
    history = FakeHistory([A])
    request = rollout.Request(K8S, run.request.out_dir, image=f"{REPO}@{B}")
    with pytest.raises(rollout.RolloutFailedError) as caught:
        rollout.deploy(request, run.kube, history)
    assert caught.value.one_line() == (
        f"rollout of {B} to staging failed (kubectl apply: {refused}):"
        f" rolled staging back from {B} to {A}"
    )
    assert history.digests == [A, B, A]
    assert [r["key"] for r in kubectl.records()][-3:] == ["apply", "apply", "rollout status"]


def test_when_the_rollback_does_not_roll_out_either_the_line_says_both(
    kubectl: StandIn, run: Run
) -> None:
    kubectl.answer("rollout status", {"rc": 1, "stderr": DEADLINE})
    history = FakeHistory([A, B])
    with pytest.raises(rollout.RolloutFailedError) as caught:
        rollout.deploy(run.request, run.kube, history)
    assert caught.value.one_line() == (
        f"rollout of {B} to staging failed ({DEADLINE.strip()}); rolled staging back to {A},"
        f" whose rollout failed too ({DEADLINE.strip()})"
    )
    assert history.current() == A


@pytest.mark.engine
def test_deploy_k8s_dry_run_prints_the_diff_of_the_pinned_render_and_moves_nothing(
    kubectl: StandIn, registry: str, scratch_repo: str, tmp_path: Path
) -> None:
    client = RegistryClient(registry, retry=FAST)
    image = parse_reference(scratch_repo)
    digest = push_tiny_image(client, image.repository, 1)
    out = tmp_path / "k8s"
    done = _invoke(
        kubectl,
        *["deploy.k8s", "--env", "staging", "--image", f"{scratch_repo}:build-1"],
        *["--out", str(out), "--dry-run"],
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"deploying {scratch_repo}@{digest} to {NS} ({CONTEXT})",
        "-  image: old",
        "+  image: new",
        "dry run: nothing applied",
    ]
    assert [r["key"] for r in kubectl.records()] == ["config current-context", "get secret", "diff"]
    assert kubectl.records()[-1]["images"] == [f"{scratch_repo}@{digest}"]
    assert client.digest(image.repository, "staging") is None  # nothing promoted


@pytest.mark.engine
def test_deploy_k8s_with_a_failed_rollout_exits_1_with_one_line_and_staging_back_on_its_digest(
    kubectl: StandIn, registry: str, scratch_repo: str, tmp_path: Path
) -> None:
    """The task end to end: signatures checked by cosign, history in the registry."""
    client = RegistryClient(registry, retry=FAST)
    image = parse_reference(scratch_repo)
    good, bad = (push_tiny_image(client, image.repository, n) for n in (1, 2))
    keys = cosign_keys(tmp_path / "keys")
    for digest in (good, bad):
        sign(image.with_digest(digest), config_from_env(keys))
    envs = rollout.EnvHistory(client, image, "staging", verified=lambda ref: True, log=print)
    envs.promote(good)
    kubectl.answer("rollout status", {"rc": 1, "stderr": DEADLINE}, {"stdout": ROLLED_OUT})
    done = _invoke(
        kubectl,
        *["deploy.k8s", "--env", "staging", "--image", f"{scratch_repo}@{bad}"],
        *["--out", str(tmp_path / "k8s")],
        environ={"COSIGN_PUBLIC_KEY": keys["COSIGN_PUBLIC_KEY"]},
    )
    assert (done.returncode, done.stderr.splitlines()) == (
        1,
        [
            f"error: rollout of {bad} to staging failed ({DEADLINE.strip()}):"
            f" rolled staging back from {bad} to {good}"
        ],
    )
    assert envs.current() == good
    assert recorded(envs) == [good, bad, good]
