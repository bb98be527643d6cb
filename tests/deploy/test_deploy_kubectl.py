"""The kubectl calls of deploy.k8s, planned without a cluster: targets from settings, facts
from renders, the prune scope, and the exact argv lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.deploy import k8s
from pipeline.deploy.kubectl import (
    Facts,
    Target,
    facts,
    missing_secrets,
    plan_deploy,
    required_secrets,
    rollout_timeout,
    scope_problems,
    target_for,
)
from pipeline.errors import UsageError
from pipeline.oci.reference import parse_reference
from tests.conftest import ROOT

K8S = ROOT / "docker" / "k8s"
DIGEST = "sha256:" + "ab" * 32
SETTINGS = {
    "staging": {"context": "acme-staging", "namespace": "api-gateway-staging"},
    "production": {"context": "acme-production"},
}
FACTS = Facts("api-gateway", "gateway", ("api-gateway-keys", "ghcr-pull"), 600)
PROD = Target("production", "acme-production")


@pytest.mark.parametrize(
    ("env", "flag", "expected"),
    [
        ("staging", None, Target("staging", "acme-staging", "api-gateway-staging")),
        ("staging", "kind-kind", Target("staging", "kind-kind", "api-gateway-staging")),
        ("production", None, Target("production", "acme-production")),
        ("production", " other ", Target("production", "other")),
    ],
)
def test_an_environments_context_is_its_setting_unless_the_flag_names_another(
    env: str, flag: str | None, expected: Target
) -> None:
    assert target_for(SETTINGS, env, flag) == expected


@pytest.mark.parametrize("settings", [{}, {"qa": {"context": ""}}, {"qa": {"namespace": "x"}}])
def test_an_environment_without_a_context_is_a_usage_error_saying_where_to_set_it(
    settings: dict[str, Any],
) -> None:
    with pytest.raises(UsageError) as caught:
        target_for(settings, "qa")
    assert caught.value.one_line() == (
        'no kubectl context for qa: set [tool.pipeline.deploy.qa] context = "NAME",'
        " or pass --context NAME"
    )


@pytest.fixture(scope="module", params=k8s.ENVIRONMENTS)
def render(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = request.param
    image = parse_reference(f"127.0.0.1:5000/acme/api-gateway@{DIGEST}")
    rendered = k8s.render(K8S, env, image, tmp_path_factory.mktemp(env))
    return env, k8s.load_documents(rendered.path.read_text(encoding="utf-8"))


def test_the_facts_of_each_render_are_its_namespace_deployment_secrets_and_deadline(
    render: Any,
) -> None:
    env, docs = render
    namespace = {"staging": "api-gateway-staging", "production": "api-gateway"}[env]
    assert facts(docs, Target(env, "c", namespace)) == Facts(
        namespace, "gateway", ("api-gateway-keys", "ghcr-pull"), 600
    )


def test_every_rendered_object_is_in_the_prune_scope(render: Any) -> None:
    env, docs = render
    assert scope_problems(docs, env) == []


def test_a_render_into_another_namespace_than_the_setting_is_refused(render: Any) -> None:
    env, docs = render
    with pytest.raises(UsageError, match=f"{env} renders into namespace '.*', not 'elsewhere'"):
        facts(docs, Target(env, "c", "elsewhere"))


def _doc(kind: str, name: str, **labels: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "labels": labels}}


GATEWAY = {"app.kubernetes.io/part-of": "api-gateway", "app.kubernetes.io/instance": "staging"}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_doc("Service", "gateway", **GATEWAY), []),
        (_doc("HTTPRoute", "gateway", **GATEWAY), []),
        (
            _doc("ClusterRole", "admin", **GATEWAY),
            ["ClusterRole/admin: kind not in the prune allowlist"],
        ),
        (
            _doc("Service", "other"),
            [
                "Service/other: not labelled app.kubernetes.io/part-of=api-gateway,"
                "app.kubernetes.io/instance=staging"
            ],
        ),
        (
            _doc("ConfigMap", "c", **{**GATEWAY, "app.kubernetes.io/instance": "production"}),
            [
                "ConfigMap/c: not labelled app.kubernetes.io/part-of=api-gateway,"
                "app.kubernetes.io/instance=staging"
            ],
        ),
    ],
)
def test_the_prune_scope_is_the_allowlisted_kinds_with_the_gateways_labels(
    doc: dict[str, Any], expected: list[str]
) -> None:
    assert scope_problems([doc], "staging") == expected


def test_a_render_outside_the_prune_scope_is_refused_before_any_call(render: Any) -> None:
    env, docs = render
    with pytest.raises(UsageError, match="ClusterRole/x: kind not in the prune allowlist"):
        facts([*docs, _doc("ClusterRole", "x")], Target(env, "c"))


@pytest.mark.parametrize(
    ("pod", "generated", "expected"),
    [
        ({}, set(), ()),
        ({"imagePullSecrets": [{"name": "ghcr-pull"}]}, set(), ("ghcr-pull",)),
        (
            {"volumes": [{"name": "k", "secret": {"secretName": "keys"}}, {"name": "e"}]},
            set(),
            ("keys",),
        ),
        (
            {
                "imagePullSecrets": [{"name": "ghcr-pull"}],
                "volumes": [{"name": "k", "secret": {"secretName": "keys-5h2k"}}],
            },
            {"keys-5h2k"},
            ("ghcr-pull",),
        ),
    ],
)
def test_the_required_secrets_are_those_the_pod_mounts_that_the_render_does_not_make(
    pod: dict[str, Any], generated: set[str], expected: tuple[str, ...]
) -> None:
    assert required_secrets(pod, generated) == expected


@pytest.mark.parametrize(("override", "expected"), [(None, 660), (0, 660), (90, 90)])
def test_the_rollout_waits_past_the_progress_deadline_unless_told(
    override: int | None, expected: int
) -> None:
    assert rollout_timeout(FACTS, override) == expected


def test_the_plan_is_secrets_diff_server_side_apply_with_applyset_pruning_then_rollout() -> None:
    plan = plan_deploy(PROD, FACTS, Path("/out/production.yaml"))
    on = ["kubectl", "--context", "acme-production"]
    ssa = ["--server-side", "--field-manager=api-gateway-pipeline", "--force-conflicts"]
    prune = ["--prune", "--applyset=configmaps/api-gateway-applyset"]
    names = ["--ignore-not-found", "-o", "name"]
    assert plan.argvs() == [
        [*on, "get", "secret", "api-gateway-keys", "ghcr-pull", "-n", "api-gateway", *names],
        [*on, "diff", *ssa, "-f", "/out/production.yaml"],
        [*on, "apply", *ssa, *prune, "-n", "api-gateway", "-f", "/out/production.yaml"],
        [*on, "rollout", "status", "deployment/gateway", "-n", "api-gateway", "--timeout=660s"],
    ]
    assert plan.wait_s == 660


def test_without_secrets_to_check_the_plan_skips_the_secrets_call() -> None:
    plan = plan_deploy(PROD, Facts("ns", "gw", (), 120), Path("m.yaml"), timeout_s=30)
    assert [argv[3] for argv in plan.argvs()] == ["diff", "apply", "rollout"]
    assert plan.rollout[-1] == "--timeout=30s"


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        ("secret/api-gateway-keys\nsecret/ghcr-pull\n", []),
        ("secret/ghcr-pull\n", ["api-gateway-keys"]),
        ("", ["api-gateway-keys", "ghcr-pull"]),
    ],
)
def test_missing_secrets_are_those_kubectl_did_not_list(listed: str, expected: list[str]) -> None:
    assert missing_secrets(FACTS, listed) == expected
