"""The Kubernetes manifests: both overlays render offline with the image pinned by digest, pass
``kubernetes-validate --strict`` for every supported Kubernetes version (the HTTPRoute, a CRD the
validator does not know, against the Gateway API's own schema), and hold what a first deploy to
a real cluster needs: the namespace, the security and termination settings, the way in, the
network policy, the API keys from a Secret, the spread over nodes."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
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
# The supported Kubernetes versions (README: Kubernetes): 1.30 is the first with the preStop
# sleep action on by default.
SUPPORTED = ["1.30", "1.31", "1.32", "1.33", "1.34", "1.35", "1.36", "1.37"]
GATEWAY_API_SCHEMAS = ROOT / "tests" / "fixtures" / "gateway-api"
NAMESPACES = {"staging": "api-gateway-staging", "production": "api-gateway"}
HOSTS = {"staging": "api.staging.acme.example", "production": "api.acme.example"}
UPSTREAM_NAMESPACES = {"staging": "api-staging", "production": "api"}
SELECTOR = {
    "app.kubernetes.io/component": "gateway",
    "app.kubernetes.io/name": "api-gateway",
    "app.kubernetes.io/part-of": "api-gateway",
}


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


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = k8s.find(docs, kind)
    return dict(doc)


def _merged(*tables: dict[str, Any]) -> dict[str, Any]:
    """The gateway's config from several files, as ``--config A --config B`` merges them:
    tables merge key by key, any other value of a later file replaces the earlier one."""
    merged: dict[str, Any] = {}
    for table in tables:
        for key, value in table.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = _merged(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged


def _example_keys(env: str) -> dict[str, Any]:
    example = K8S / "overlays" / env / "secrets" / "api-keys.toml.example"
    return tomllib.loads(example.read_text(encoding="utf-8"))


def _copy_of_the_manifests(tmp_path: Path) -> Path:
    """docker/k8s as a fresh clone has it (no git-ignored key files), to change and render."""
    copy_dir = tmp_path / "k8s"
    shutil.copytree(K8S, copy_dir, ignore=shutil.ignore_patterns("api-keys.toml"))
    return copy_dir


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{path} has {old!r} {text.count(old)} times"
    path.write_text(text.replace(old, new), encoding="utf-8")


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


def _validate(path: Path, version: str) -> tuple[int, str]:
    done = subprocess.run(
        [str(VALIDATOR), "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("version", SUPPORTED)
def test_the_rendered_manifests_pass_kubernetes_validate_strict_but_for_the_httproute_crd(
    rendered: Any, version: str
) -> None:
    result, _ = rendered
    # Every built-in kind is validated; the one kind it has no schema for is named, and
    # checked against the Gateway API's schema below.
    assert _validate(result.path, version) == (
        0,
        f"WARN {result.path} Couldn't find schema for kind HTTPRoute with api version"
        f" gateway.networking.k8s.io/v1 for kubernetes version {version}\n",
    )


@pytest.mark.parametrize("bundle", ["v1.0.0", "v1.6.1"])
def test_the_httproute_is_valid_for_the_oldest_and_newest_gateway_api(
    rendered: Any, bundle: str
) -> None:
    _, docs = rendered
    schema_file = GATEWAY_API_SCHEMAS / f"httproute-v1-{bundle}.json"
    validator = jsonschema.Draft7Validator(json.loads(schema_file.read_text(encoding="utf-8")))
    route = copy.deepcopy(_one(docs, "HTTPRoute"))
    assert [error.message for error in validator.iter_errors(route)] == []
    route["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Prefix"
    route["spec"]["hostname"] = ["typo.example"]
    assert sorted(error.message for error in validator.iter_errors(route)) == [
        "'Prefix' is not one of ['Exact', 'PathPrefix', 'RegularExpression']",
        "Additional properties are not allowed ('hostname' was unexpected)",
    ]


def test_the_rendered_manifests_hold_every_kind_in_the_overlays_namespace(rendered: Any) -> None:
    result, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HTTPRoute",
        "HorizontalPodAutoscaler",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    expected = NAMESPACES[result.env]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {expected}
    assert result.namespace == expected


def test_the_readme_names_the_supported_kubernetes_versions_the_tests_validate() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"Supported: **Kubernetes {SUPPORTED[0]} to {SUPPORTED[-1]}**" in readme


def test_the_namespace_comes_first_and_enforces_pod_security_restricted(rendered: Any) -> None:
    result, docs = rendered
    namespace = docs[0]
    assert (namespace["kind"], namespace["metadata"]["name"]) == (
        "Namespace",
        NAMESPACES[result.env],
    )
    assert namespace["metadata"]["labels"] == {
        **SELECTOR,
        "app.kubernetes.io/instance": result.env,
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": f"v{SUPPORTED[0]}",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "latest",
    }


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


def test_the_probes_use_the_gateways_health_endpoints_on_the_admin_port(rendered: Any) -> None:
    _, docs = rendered
    container = _container(docs)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "admin", "containerPort": 9901, "protocol": "TCP"},
    ]


def test_the_service_exposes_only_the_public_port_and_metrics_are_scraped_from_the_pods(
    rendered: Any,
) -> None:
    _, docs = rendered
    service = _one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == SELECTOR
    assert _deployment(docs)["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9901",
        "prometheus.io/path": "/metrics",
    }


def test_the_hpa_alone_sets_the_replicas_within_each_overlays_bounds(rendered: Any) -> None:
    result, docs = rendered
    deployment = _deployment(docs)
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert "replicas" not in deployment["spec"]  # an apply never resets what the HPA chose
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    expected = {
        "staging": (2, 3, {"cpu": "500m", "memory": "128Mi"}),
        "production": (3, 12, {"cpu": "2", "memory": "256Mi"}),
    }[result.env]
    assert (
        hpa["spec"]["minReplicas"],
        hpa["spec"]["maxReplicas"],
        _container(docs)["resources"]["limits"],
    ) == expected


def test_the_pods_spread_over_zones_and_nodes_and_must_stay_ready_10_s(rendered: Any) -> None:
    _, docs = rendered
    spec = _deployment(docs)["spec"]
    assert (spec["minReadySeconds"], spec["progressDeadlineSeconds"]) == (10, 600)
    assert spec["template"]["spec"]["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": SELECTOR},
            "matchLabelKeys": ["pod-template-hash"],
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": {"matchLabels": SELECTOR},
    }


def test_the_pods_run_as_their_own_service_account_without_a_token_and_pull_with_ghcr_pull(
    rendered: Any,
) -> None:
    _, docs = rendered
    account = _one(docs, "ServiceAccount")
    assert (account["metadata"]["name"], account["automountServiceAccountToken"]) == (
        "gateway",
        False,
    )
    pod = _deployment(docs)["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("gateway", False)
    assert pod["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    assert not k8s.find(docs, "Secret")  # created in the cluster, never rendered


def test_the_instance_label_is_on_every_object_and_the_pods_but_in_no_selector(
    rendered: Any,
) -> None:
    result, docs = rendered
    instance = {"app.kubernetes.io/instance": result.env}
    for doc in docs:
        assert doc["metadata"]["labels"].items() >= {**SELECTOR, **instance}.items(), doc["kind"]
    template = _deployment(docs)["spec"]["template"]
    assert template["metadata"]["labels"] == {**SELECTOR, **instance}
    # Selectors are immutable on a Deployment: the instance label never enters one.
    assert _deployment(docs)["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert _one(docs, "Service")["spec"]["selector"] == SELECTOR
    assert _one(docs, "NetworkPolicy")["spec"]["podSelector"] == {"matchLabels": SELECTOR}


def test_the_httproute_attaches_to_the_platforms_gateway_for_the_environments_host(
    rendered: Any,
) -> None:
    result, docs = rendered
    route = _one(docs, "HTTPRoute")
    assert route["spec"] == {
        "parentRefs": [
            {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "public",
                "namespace": "gateway-system",
            }
        ],
        "hostnames": [HOSTS[result.env]],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": "gateway", "port": 80}],
            }
        ],
    }


@pytest.mark.parametrize("env", k8s.ENVIRONMENTS)
def test_with_the_ingress_component_instead_an_ingress_serves_the_environments_host(
    tmp_path: Path, env: str
) -> None:
    k8s_dir = _copy_of_the_manifests(tmp_path)
    overlay = k8s_dir / "overlays" / env
    _edit(
        overlay / "kustomization.yaml",
        "../../components/gateway-api\n",
        "../../components/ingress\n",
    )
    _edit(
        overlay / "settings.yaml", "edge-namespace: gateway-system", "edge-namespace: ingress-nginx"
    )
    text = k8s.render_overlay(k8s_dir, env, IMAGE)
    docs = k8s.load_documents(text)
    assert k8s.find(docs, "HTTPRoute") == []
    ingress = _one(docs, "Ingress")
    assert ingress["metadata"]["namespace"] == NAMESPACES[env]
    assert ingress["spec"] == {
        "ingressClassName": "nginx",
        "tls": [{"hosts": [HOSTS[env]], "secretName": "api-gateway-tls"}],
        "rules": [
            {
                "host": HOSTS[env],
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "gateway", "port": {"name": "http"}}},
                        }
                    ]
                },
            }
        ],
    }
    (edge, _) = _one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert edge["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    manifest = tmp_path / f"{env}.yaml"
    manifest.write_text(text, encoding="utf-8")
    assert _validate(manifest, SUPPORTED[0]) == (0, "")  # every kind known: nothing left out


def test_the_network_policy_admits_the_edge_and_the_namespace_and_reaches_dns_and_upstreams(
    rendered: Any,
) -> None:
    result, docs = rendered
    policy = _one(docs, "NetworkPolicy")

    def namespace(name: str) -> dict[str, Any]:
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

    assert policy["spec"] == {
        "podSelector": {"matchLabels": SELECTOR},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {"from": [namespace("gateway-system")], "ports": [{"port": "http", "protocol": "TCP"}]},
            {"from": [{"podSelector": {}}], "ports": [{"port": "admin", "protocol": "TCP"}]},
        ],
        "egress": [
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            {"to": [namespace(UPSTREAM_NAMESPACES[result.env])]},
        ],
    }
    # The upstreams the gateway config names live in the namespace the policy lets it reach.
    pod = _deployment(docs)["spec"]["template"]["spec"]
    found = k8s.gateway_config(docs, pod)
    assert found is not None
    targets = {t for r in found[1]["routes"] for t in r["upstream"]["targets"]}
    assert targets == {f"http://upstream.{UPSTREAM_NAMESPACES[result.env]}.svc.cluster.local:80"}


def test_the_config_map_with_the_secrets_keys_is_a_valid_gateway_config_listening_on_8080(
    rendered: Any,
) -> None:
    result, docs = rendered
    pod = _deployment(docs)["spec"]["template"]["spec"]
    found = k8s.gateway_config(docs, pod)
    assert found is not None
    name, data = found
    assert "api_keys" not in data  # the hashes are only in the Secret
    config = parse_gateway_config(_merged(data, _example_keys(result.env)))
    assert config.server.port == 8080
    assert [r.path for r in config.routes] == ["/api"]
    assert name.startswith("gateway-config-")  # content-hashed: a config change rolls the pods


def test_each_environment_requires_an_api_key_and_limits_the_rate_per_key(rendered: Any) -> None:
    result, docs = rendered
    found = k8s.gateway_config(docs, _deployment(docs)["spec"]["template"]["spec"])
    assert found is not None
    (route,) = parse_gateway_config(_merged(found[1], _example_keys(result.env))).routes
    assert route.auth is not None and route.rate_limit is not None
    assert (sorted(route.auth.keys), route.auth.header) == (["partner", "web"], "x-api-key")
    assert (route.rate_limit.rate, route.rate_limit.burst, route.rate_limit.by) == {
        "staging": (10.0, 20, "key"),
        "production": (50.0, 100, "key"),
    }[result.env]


def test_the_gateway_reads_its_config_then_the_key_hashes_from_the_api_gateway_keys_secret(
    rendered: Any,
) -> None:
    _, docs = rendered
    pod = _deployment(docs)["spec"]["template"]["spec"]
    container = _container(docs)
    assert container["args"] == [
        "--config",
        "/etc/gateway/gateway.toml",
        "--config",
        "/etc/gateway-keys/api-keys.toml",
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["api-keys"]["secret"] == {
        "secretName": "api-gateway-keys",
        "defaultMode": 0o440,
        "items": [{"key": "api-keys.toml", "path": "api-keys.toml"}],
    }
    mounts = {m["name"]: (m["mountPath"], m.get("readOnly")) for m in container["volumeMounts"]}
    assert mounts["api-keys"] == ("/etc/gateway-keys", True)


@pytest.mark.parametrize("env", k8s.ENVIRONMENTS)
def test_the_key_files_are_git_ignored_and_only_their_examples_committed(env: str) -> None:
    secrets = K8S / "overlays" / env / "secrets"
    done = subprocess.run(
        [
            "git",
            "check-ignore",
            "--no-index",
            str(secrets / "api-keys.toml"),
            str(secrets / "api-keys.toml.example"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    ignored = done.stdout.splitlines()
    assert ignored == [str(secrets / "api-keys.toml")]


@pytest.mark.parametrize("env", k8s.ENVIRONMENTS)
def test_the_documented_secret_generator_makes_a_hashed_secret_the_pods_mount(
    tmp_path: Path, env: str
) -> None:
    k8s_dir = _copy_of_the_manifests(tmp_path)
    overlay = k8s_dir / "overlays" / env
    shutil.copy(
        overlay / "secrets" / "api-keys.toml.example", overlay / "secrets" / "api-keys.toml"
    )
    documented = [
        line.removeprefix("#   ")
        for line in (overlay / "kustomization.yaml").read_text(encoding="utf-8").splitlines()
        if line.startswith("#   ")
    ]
    with (overlay / "kustomization.yaml").open("a", encoding="utf-8") as f:
        f.write("\n".join(documented) + "\n")
    docs = k8s.load_documents(k8s.render_overlay(k8s_dir, env, IMAGE))
    secret = _one(docs, "Secret")
    assert secret["metadata"]["name"].startswith("api-gateway-keys-")
    assert list(secret["data"]) == ["api-keys.toml"]
    volumes = {v["name"]: v for v in _deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == secret["metadata"]["name"]


def test_the_grace_period_covers_the_pre_stop_sleep_and_the_gateways_drain_time(
    rendered: Any,
) -> None:
    result, docs = rendered
    pod = _deployment(docs)["spec"]["template"]["spec"]
    found = k8s.gateway_config(docs, pod)
    assert found is not None
    drain = k8s.drain_timeout(found[1])
    # The sleep action (Kubernetes 1.30+): no shell or process in the container needed.
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
