"""The Kubernetes manifests: both overlays render offline with the image pinned by digest, pass
``kubernetes-validate --strict``, and keep the security and termination settings."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.config import parse as parse_gateway_config
from pipeline.deploy import k8s
from pipeline.errors import UsageError
from pipeline.oci.reference import parse_reference
from tests.conftest import ROOT

K8S = ROOT / "docker" / "k8s"
DIGEST = "sha256:" + "ab" * 32
IMAGE = parse_reference(f"127.0.0.1:5000/acme/api-gateway:1.2.3@{DIGEST}")
PINNED = f"127.0.0.1:5000/acme/api-gateway@{DIGEST}"
VALIDATOR = Path(sys.executable).parent / "kubernetes-validate"


@pytest.fixture(scope="module", params=k8s.ENVIRONMENTS)
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("k8s")
    result = k8s.render(K8S, request.param, IMAGE, out)
    docs = k8s.load_documents(result.path.read_text(encoding="utf-8"))
    return result, docs


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = k8s.find(docs, "Deployment")
    return dict(deployment)


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _deployment(docs)["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.mark.parametrize("ref", ["", "a b", "r.io/a:", "r.io/a@sha256:short", ":tag"])
def test_a_malformed_image_is_a_usage_error_naming_the_flag(ref: str) -> None:
    with pytest.raises(UsageError, match="--image"):
        k8s.parse_image(ref)


def test_a_reference_with_a_digest_is_used_as_is_without_asking_the_registry() -> None:
    def lookup(ref: str) -> str:
        raise AssertionError("the registry was asked")

    assert k8s.resolve_digest(f"r.io/a:1@{DIGEST}", lookup=lookup).pinned == f"r.io/a@{DIGEST}"


def test_without_image_the_pushed_digest_of_the_build_record_is_deployed(tmp_path: Path) -> None:
    from pipeline.build.record import BuildRecord

    def lookup(ref: str) -> str:
        raise AssertionError("the registry was asked")

    record = tmp_path / "image.toml"
    BuildRecord(
        image="r.io/a", version="1.0.0", tags=["1.0.0"], platforms=["linux/amd64"], digest=DIGEST
    ).write(record)
    with pytest.raises(UsageError, match=f"{record} records no pushed digest"):
        k8s.image_for(None, record, lookup=lookup)
    pushed = BuildRecord(
        image="r.io/a", version="1.0.0", tags=["1.0.0"], platforms=["linux/amd64"], digest=DIGEST
    )
    pushed.pushed = True
    pushed.write(record)
    assert k8s.image_for(None, record, lookup=lookup).pinned == f"r.io/a@{DIGEST}"
    assert k8s.image_for(f"r.io/b@{DIGEST}", record, lookup=lookup).pinned == f"r.io/b@{DIGEST}"


def test_a_tag_is_resolved_to_its_digest_by_the_one_lookup() -> None:
    seen: list[str] = []

    def lookup(ref: str) -> str:
        seen.append(ref)
        return DIGEST

    ref = k8s.resolve_digest("r.io/acme/gw:1.2.3", lookup=lookup)
    assert ref.pinned == f"r.io/acme/gw@{DIGEST}"
    assert seen == ["r.io/acme/gw:1.2.3"]


def test_the_rendered_deployment_pins_the_image_by_digest(rendered: Any) -> None:
    result, docs = rendered
    assert result.image == PINNED
    assert _container(docs)["image"] == PINNED
    assert f"image: {PINNED}\n" in result.path.read_text(encoding="utf-8")


@pytest.mark.parametrize("version", ["1.30", "1.37"])  # 1.30: the preStop sleep action is on
def test_the_rendered_manifests_pass_kubernetes_validate_strict(
    rendered: Any, version: str
) -> None:
    result, _ = rendered
    done = subprocess.run(
        [str(VALIDATOR), "--strict", "--quiet", "-k", version, str(result.path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_rendered_manifests_hold_every_kind_in_the_overlays_namespace(rendered: Any) -> None:
    result, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    expected = {"staging": "api-gateway-staging", "production": "api-gateway"}[result.env]
    assert {d["metadata"]["namespace"] for d in docs} == {expected}
    assert result.namespace == expected


def test_the_pod_runs_non_root_read_only_without_capabilities_under_seccomp(
    rendered: Any,
) -> None:
    _, docs = rendered
    pod = _deployment(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = _container(docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True


def test_the_probes_use_the_gateways_health_endpoints(rendered: Any) -> None:
    _, docs = rendered
    container = _container(docs)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_each_overlay_sets_its_own_replicas_and_resources(rendered: Any) -> None:
    result, docs = rendered
    deployment = _deployment(docs)
    (hpa,) = k8s.find(docs, "HorizontalPodAutoscaler")
    expected = {
        "staging": (2, 2, 3, {"cpu": "500m", "memory": "128Mi"}),
        "production": (3, 3, 12, {"cpu": "2", "memory": "256Mi"}),
    }[result.env]
    assert (
        deployment["spec"]["replicas"],
        hpa["spec"]["minReplicas"],
        hpa["spec"]["maxReplicas"],
        _container(docs)["resources"]["limits"],
    ) == expected


def test_the_config_map_is_a_valid_gateway_config_listening_on_the_container_port(
    rendered: Any,
) -> None:
    _, docs = rendered
    pod = _deployment(docs)["spec"]["template"]["spec"]
    found = k8s.gateway_config(docs, pod)
    assert found is not None
    name, data = found
    config = parse_gateway_config(data)
    assert config.server.port == 8080
    assert [r.path for r in config.routes] == ["/api"]
    assert name.startswith("gateway-config-")  # content-hashed: a config change rolls the pods


def test_the_grace_period_covers_the_pre_stop_sleep_and_the_gateways_drain_time(
    rendered: Any,
) -> None:
    result, docs = rendered
    pod = _deployment(docs)["spec"]["template"]["spec"]
    found = k8s.gateway_config(docs, pod)
    assert found is not None
    drain = k8s.drain_timeout(found[1])
    pre_stop = _container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod["terminationGracePeriodSeconds"]
    assert (drain, pre_stop, grace) == {
        "staging": (20.0, 5, 30),
        "production": (30.0, 5, 40),
    }[result.env]


def test_the_checks_find_nothing_wrong_in_the_rendered_manifests(rendered: Any) -> None:
    _, docs = rendered
    assert k8s.check_manifests(docs, PINNED) == []


def _mutate_container(key: str, value: Any) -> Any:
    def mutate(docs: list[dict[str, Any]]) -> None:
        container = _deployment(docs)["spec"]["template"]["spec"]["containers"][0]
        container[key] = value

    return mutate


def _mutate_security(key: str, value: Any) -> Any:
    def mutate(docs: list[dict[str, Any]]) -> None:
        container = _deployment(docs)["spec"]["template"]["spec"]["containers"][0]
        container["securityContext"][key] = value

    return mutate


def _mutate_grace(value: int) -> Any:
    def mutate(docs: list[dict[str, Any]]) -> None:
        _deployment(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = value

    return mutate


def _drop_kind(kind: str) -> Any:
    def mutate(docs: list[dict[str, Any]]) -> None:
        docs[:] = [d for d in docs if d["kind"] != kind]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "problems"),
    [
        (
            _mutate_container("image", "127.0.0.1:5000/acme/api-gateway:1.2.3"),
            [
                f"container image is '127.0.0.1:5000/acme/api-gateway:1.2.3', expected '{PINNED}'",
                "container image is not pinned by digest",
            ],
        ),
        (
            _mutate_security("readOnlyRootFilesystem", False),
            ["container: readOnlyRootFilesystem is not true"],
        ),
        (
            _mutate_security("capabilities", {"drop": ["ALL"], "add": ["NET_ADMIN"]}),
            ["container: capabilities are not drop [ALL] with nothing added"],
        ),
        (
            _mutate_grace(10),
            [
                "terminationGracePeriodSeconds 10 < preStop sleep 5 + drain_timeout 20:"
                " pods would be killed mid-drain"
            ],
        ),
        (_drop_kind("PodDisruptionBudget"), ["no PodDisruptionBudget selects the gateway pods"]),
        (
            _drop_kind("HorizontalPodAutoscaler"),
            ["no HorizontalPodAutoscaler scales the Deployment"],
        ),
    ],
)
def test_the_checks_name_each_broken_setting(
    tmp_path: Path, mutate: Any, problems: list[str]
) -> None:
    text = k8s.render_overlay(K8S, "staging", IMAGE)
    docs = copy.deepcopy(k8s.load_documents(text))
    mutate(docs)
    assert k8s.check_manifests(docs, PINNED) == problems


def test_an_unknown_environment_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--env 'qa': expected one of staging, production"):
        k8s.render(K8S, "qa", IMAGE, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_rendering_without_a_digest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pins images by digest"):
        k8s.render(K8S, "staging", parse_reference("r.io/a:1"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def _invoke(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_deploy_k8s_without_a_cluster_fails_with_one_line_naming_what_is_missing(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    done = _invoke(
        "deploy.k8s", "--env", "staging", "--image", PINNED, "--out", str(tmp_path), env=env
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: no Kubernetes cluster configured: kubectl has no current context"
        f" (KUBECONFIG={tmp_path / 'no-kubeconfig'}): set KUBECONFIG to a kubeconfig for the"
        " cluster, or pass --context NAME"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing rendered, nothing half-done


def test_deploy_render_writes_the_pinned_manifests(tmp_path: Path) -> None:
    done = _invoke(
        "deploy.render",
        "--env",
        "production",
        "--image",
        f"127.0.0.1:5000/acme/api-gateway:1.2.3@{DIGEST}",
        "--out",
        str(tmp_path),
        env=dict(os.environ),
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"rendered production: {tmp_path / 'production.yaml'}",
        f"  image: {PINNED}",
        "  namespace: api-gateway",
    ]


@pytest.mark.engine
def test_a_tag_in_the_registry_resolves_to_the_digest_the_registry_serves(registry: str) -> None:
    repository, tag = "library/python", "3.11-slim"
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": ", ".join(
                [
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                ]
            )
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        expected = response.headers["Docker-Content-Digest"]
    resolved = k8s.resolve_digest(f"{registry}/{repository}:{tag}")
    assert resolved.pinned == f"{registry}/{repository}@{expected}"


@pytest.mark.engine
def test_deploy_render_resolves_a_tag_to_its_digest_before_pinning(
    registry: str, tmp_path: Path
) -> None:
    tagged = f"{registry}/library/python:3.11-slim"
    expected = k8s.resolve_digest(tagged).pinned
    done = _invoke(
        "deploy.render",
        "--env",
        "staging",
        "--image",
        tagged,
        "--out",
        str(tmp_path),
        env=dict(os.environ),
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[1] == f"  image: {expected}"
    docs = k8s.load_documents((tmp_path / "staging.yaml").read_text(encoding="utf-8"))
    assert _container(docs)["image"] == expected


def test_deploy_render_of_an_unknown_environment_exits_2_with_one_line(tmp_path: Path) -> None:
    done = _invoke(
        "deploy.render",
        "--env",
        "qa",
        "--image",
        PINNED,
        "--out",
        str(tmp_path),
        env=dict(os.environ),
    )
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "error: --env 'qa': expected one of staging, production",
    )
    assert list(tmp_path.iterdir()) == []


def test_the_base_config_file_parses_as_toml() -> None:
    data = tomllib.loads((K8S / "base" / "gateway.toml").read_text(encoding="utf-8"))
    assert parse_gateway_config(data).server.drain_timeout == 20.0


class FakeKubectl:
    """Records kubectl argv lists; answers ``config current-context`` with a context name."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **kwargs: Any) -> Any:
        self.calls.append(list(argv))
        out = "kind-test\n" if argv[1:3] == ["config", "current-context"] else ""
        return subprocess.CompletedProcess(argv, 0, stdout=out, stderr="")


def test_apply_checks_the_cluster_applies_then_waits_for_the_rollout(tmp_path: Path) -> None:
    rendered = k8s.render(K8S, "production", IMAGE, tmp_path)
    kubectl = FakeKubectl()
    namespace = k8s.apply(rendered.path, timeout_s=120, runner=kubectl)
    assert namespace == "api-gateway"
    assert kubectl.calls == [
        ["kubectl", "config", "current-context"],
        ["kubectl", "apply", "-f", str(rendered.path)],
        [
            "kubectl",
            "rollout",
            "status",
            "deployment/gateway",
            "-n",
            "api-gateway",
            "--timeout=120s",
        ],
    ]


def test_rollback_undoes_to_the_given_revision_in_the_named_context() -> None:
    kubectl = FakeKubectl()
    k8s.rollback("api-gateway-staging", context="prod-eu", to_revision=3, runner=kubectl)
    deployment = ["kubectl", "--context", "prod-eu", "rollout"]
    target = ["deployment/gateway", "-n", "api-gateway-staging"]
    assert kubectl.calls == [
        ["kubectl", "config", "get-contexts", "prod-eu", "-o", "name"],
        [*deployment, "undo", *target, "--to-revision=3"],
        [*deployment, "status", *target, "--timeout=300s"],
    ]


def test_deploy_rollback_without_a_cluster_fails_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none")}
    done = _invoke("deploy.rollback", "--env", "production", "--context", "prod", env=env)
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "error: no Kubernetes cluster configured: kubectl has no context 'prod'"
        f" (KUBECONFIG={tmp_path / 'none'}): set KUBECONFIG to a kubeconfig for the cluster,"
        " or pass --context NAME",
    )
