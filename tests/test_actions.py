"""The composite actions and workflows hold no logic of their own: every `run:` step calls one
`invoke` task that exists, with flags that task takes; inputs reach scripts through `env:`;
third-party actions are pinned by commit; permissions are least; and every action documents its
inputs and outputs. Structural checks, no engine needed (the act tests run them for real)."""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTIONS = sorted((ROOT / "actions").glob("*/action.yml"))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
STAND_INS = ROOT / "tests" / "actions"

# `run:` steps that are setup plumbing, not pipeline work: (action, step name).
PLUMBING = {
    ("setup", "Install the locked dependencies"),
    ("setup", "Find what the engine lacks"),
    ("setup", "Switch Docker to the containerd image store"),
}

INVOKE = re.compile(r"\buv run invoke\s+([a-z][\w.-]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+\.\d+\.\d+$")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


@cache
def namespace() -> Any:
    spec = importlib.util.spec_from_file_location("tasks_under_test", ROOT / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ns


def task_flags(name: str) -> set[str]:
    """Every flag `invoke NAME` accepts, with `--no-X` for booleans that default to true."""
    flags: set[str] = set()
    for arg in namespace()[name].get_arguments():
        flags.update(f"--{n}" for n in arg.names if len(n) > 1)
        if arg.kind is bool and arg.default is True:
            flags.add(f"--no-{arg.names[0]}")
    return flags


def steps_of(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(job id or action name, step) for every step of a workflow or composite action."""
    data = load(path)
    if "runs" in data:
        return [(path.parent.name, s) for s in data["runs"].get("steps", [])]
    return [(job_id, s) for job_id, job in data["jobs"].items() for s in job.get("steps", [])]


def run_steps(paths: list[Path]) -> list[tuple[Path, str, dict[str, Any]]]:
    return [(p, owner, s) for p in paths for owner, s in steps_of(p) if "run" in s]


def ids(items: list[tuple[Path, str, dict[str, Any]]]) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{s.get('name') or s.get('id') or o}" for p, o, s in items]


ACTION_RUNS = run_steps(ACTIONS)
WORKFLOW_RUNS = run_steps(WORKFLOWS)


def test_the_project_has_the_actions_and_workflows_of_the_issue() -> None:
    assert {p.parent.name for p in ACTIONS} >= {"setup", "publish"}
    assert {p.name for p in WORKFLOWS} >= {"docker-build.yml", "ci.yml", "maintenance.yml"}


@pytest.mark.parametrize(("path", "owner", "step"), ACTION_RUNS, ids=ids(ACTION_RUNS))
def test_every_run_step_of_an_action_calls_one_task_or_is_setup_plumbing(
    path: Path, owner: str, step: dict[str, Any]
) -> None:
    called = INVOKE.findall(step["run"])
    if (owner, step.get("name")) in PLUMBING:
        assert called == [], "plumbing steps call no task"
        assert not re.search(r"docker (build|push|buildx build)\b|trivy|cosign", step["run"])
        return
    assert len(called) == 1, f"expected one `uv run invoke TASK`, found {called}"


@pytest.mark.parametrize(("path", "owner", "step"), WORKFLOW_RUNS, ids=ids(WORKFLOW_RUNS))
def test_every_run_step_of_a_workflow_calls_one_task(
    path: Path, owner: str, step: dict[str, Any]
) -> None:
    assert len(INVOKE.findall(step["run"])) == 1


@pytest.mark.parametrize(
    ("path", "owner", "step"), ACTION_RUNS + WORKFLOW_RUNS, ids=ids(ACTION_RUNS + WORKFLOW_RUNS)
)
def test_every_task_named_exists_and_takes_the_flags_given(
    path: Path, owner: str, step: dict[str, Any]
) -> None:
    called = INVOKE.findall(step["run"])
    if not called:
        return
    (name,) = called
    assert name in namespace().task_names, f"`invoke {name}`: no such task"
    unknown = set(FLAG.findall(step["run"])) - task_flags(name)
    assert unknown == set(), f"`invoke {name}` takes no {sorted(unknown)}"


@pytest.mark.parametrize(
    ("path", "owner", "step"), ACTION_RUNS + WORKFLOW_RUNS, ids=ids(ACTION_RUNS + WORKFLOW_RUNS)
)
def test_scripts_take_inputs_through_env_never_expanded_and_never_as_invoke_variables(
    path: Path, owner: str, step: dict[str, Any]
) -> None:
    assert "${{" not in step["run"], "an expression in a script is a template injection"
    assert [k for k in step.get("env", {}) if k.startswith("INVOKE_")] == []


@pytest.mark.parametrize("path", ACTIONS + WORKFLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_third_party_actions_are_pinned_to_a_commit_with_their_version(path: Path) -> None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"^\s*(-\s+)?uses:", line) and "./" not in line:
            assert PINNED.match(line), f"not pinned by SHA with a `# vX.Y.Z` comment: {line}"


def remote_uses() -> set[tuple[str, str]]:
    found = set()
    for path in [*ACTIONS, *WORKFLOWS, *(ROOT / "tests" / "workflows").glob("*.yml")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if match := PINNED.match(line):
                found.add((match.group(1), match.group(2)))
    return found


def test_each_pinned_action_names_one_version_and_has_a_local_stand_in_for_act() -> None:
    by_action: dict[str, set[str]] = {}
    for action, sha in remote_uses():
        by_action.setdefault(action, set()).add(sha)
        owner_repo = action.split("/")
        stand_in = STAND_INS.joinpath(owner_repo[1], *owner_repo[2:], "action.yml")
        assert stand_in.is_file(), f"{action}: no stand-in at {stand_in.relative_to(ROOT)}"
    assert {a: len(s) for a, s in by_action.items() if len(s) > 1} == {}


@pytest.mark.parametrize(
    "path", sorted(STAND_INS.rglob("action.yml")), ids=lambda p: str(p.relative_to(STAND_INS))
)
def test_every_stand_in_is_a_composite_action_that_stays_offline(path: Path) -> None:
    data = load(path)
    assert data["runs"]["using"] == "composite"
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"\b(curl|wget|pip install|docker login|docker push)\b", text)


@pytest.mark.parametrize("path", ACTIONS + WORKFLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_actions_exist_and_get_only_the_inputs_they_declare(path: Path) -> None:
    for _, step in steps_of(path):
        uses = step.get("uses", "")
        if not uses.startswith("./"):
            continue
        target = ROOT / uses / "action.yml"
        assert target.is_file(), f"{uses}: no {target.relative_to(ROOT)}"
        inputs = load(target).get("inputs", {})
        given = set(step.get("with", {}))
        assert given - set(inputs) == set(), f"{uses} declares no {given - set(inputs)}"
        required = {k for k, v in inputs.items() if v.get("required") and "default" not in v}
        assert required - given == set(), f"{uses} needs {required - given}"


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: p.parent.name)
def test_every_input_and_output_is_described_and_every_optional_input_has_a_default(
    path: Path,
) -> None:
    data = load(path)
    assert data["runs"]["using"] == "composite"
    assert data.get("description")
    for name, spec in data.get("inputs", {}).items():
        assert spec.get("description"), f"input {name}: no description"
        assert spec.get("required") or "default" in spec, f"input {name}: no default"
    for name, spec in data.get("outputs", {}).items():
        assert spec.get("description"), f"output {name}: no description"
        assert re.fullmatch(r"\$\{\{ steps\.[\w-]+\.outputs\.[\w-]+ \}\}", spec["value"])


def test_the_publish_action_has_the_inputs_and_outputs_of_the_issue() -> None:
    data = load(ROOT / "actions" / "publish" / "action.yml")
    assert set(data["inputs"]) == {
        "image",
        "registry",
        "platforms",
        "push",
        "username",
        "password",
        "cosign-key",
        "cosign-password",
        "scan-severity",
        "cache",
    }
    assert all("default" in spec for spec in data["inputs"].values())
    assert data["inputs"]["password"]["default"] == "${{ github.token }}"
    assert {"version", "tags", "digest", "scan-result", "summary"} <= set(data["outputs"])
    (publish,) = [s for s in data["runs"]["steps"] if "run" in s]
    assert INVOKE.findall(publish["run"]) == ["docker.publish"]
    # Secrets reach the task through the environment only.
    assert publish["env"]["REGISTRY_PASSWORD"] == "${{ inputs.password }}"
    assert publish["env"]["COSIGN_KEY"] == "${{ inputs.cosign-key }}"
    assert publish["env"]["COSIGN_PASSWORD"] == "${{ inputs.cosign-password }}"


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: p.parent.name)
def test_every_action_has_a_readme_with_its_inputs_outputs_and_an_example(path: Path) -> None:
    readme = path.parent / "README.md"
    assert readme.is_file()
    text = readme.read_text(encoding="utf-8")
    data = load(path)
    rows = set(re.findall(r"^\| `([\w-]+)` \|", text, flags=re.MULTILINE))
    assert rows == set(data.get("inputs", {})) | set(data.get("outputs", {}))
    assert "## Inputs" in text and "## Outputs" in text
    assert f"uses: ./actions/{path.parent.name}" in text, "no example"


def workflow(name: str) -> dict[str, Any]:
    return load(ROOT / ".github" / "workflows" / name)


def triggers(data: dict[str, Any]) -> dict[str, Any]:
    # PyYAML reads the key `on` as True.
    return data.get("on") or data[True]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_grant_least_permissions_and_have_a_concurrency_group(path: Path) -> None:
    data = load(path)
    top = data["permissions"]
    assert top == {} or set(top.values()) == {"read"}, f"top-level permissions: {top}"
    assert data["concurrency"]["group"]
    for job_id, job in data["jobs"].items():
        grants = job.get("permissions", {})
        uses = [s.get("uses", "") for s in job.get("steps", [])]
        runs = " ".join(s.get("run", "") for s in job.get("steps", []))
        uploads_sarif = any("upload-sarif" in u for u in uses)
        assert (grants.get("security-events") == "write") == uploads_sarif, job_id
        if grants.get("id-token") == "write":
            assert any("attest" in u or "publish" in u for u in uses), f"{job_id}: id-token"
        assert "docker.sign" not in runs or grants.get("id-token") == "write"
        assert set(grants.values()) <= {"read", "write"}, f"{job_id}: {grants}"
        assert job.get("timeout-minutes"), f"{job_id}: no timeout"


def test_only_the_publishing_job_may_sign_and_attest() -> None:
    jobs = workflow("docker-build.yml")["jobs"]
    with_id_token = {j for j, job in jobs.items() if job.get("permissions", {}).get("id-token")}
    assert with_id_token == {"publish"}
    with_sarif = {j for j, job in jobs.items() if job.get("permissions", {}).get("security-events")}
    assert with_sarif == {"build"}


def test_docker_build_runs_on_main_develop_release_tags_and_pull_requests_to_main() -> None:
    on = triggers(workflow("docker-build.yml"))
    assert on["push"] == {"branches": ["main", "develop"], "tags": ["v*"]}
    assert on["pull_request"] == {"branches": ["main"]}


def test_docker_build_builds_each_platform_on_its_own_runner_with_its_own_cache_scope() -> None:
    build = workflow("docker-build.yml")["jobs"]["build"]
    include = build["strategy"]["matrix"]["include"]
    assert [(i["platform"], i["runner"]) for i in include] == [
        ("linux/amd64", "ubuntu-24.04"),
        ("linux/arm64", "ubuntu-24.04-arm"),
    ]
    assert len({i["scope"] for i in include}) == 2
    (publish,) = [s for s in build["steps"] if s.get("uses") == "./actions/publish"]
    assert publish["with"]["push"] == "false"
    assert "cache" not in publish["with"], "the task's default in Actions: GitHub's cache"
    runtime = [s for s in build["steps"] if "ghaction-github-runtime" in s.get("uses", "")]
    assert len(runtime) == 1, "buildx in a run step needs the runtime variables"


def test_pull_requests_never_reach_the_job_that_logs_in_and_pushes() -> None:
    jobs = workflow("docker-build.yml")["jobs"]
    not_pr = "${{ github.event_name != 'pull_request' }}"
    assert jobs["publish"]["if"] == not_pr
    pushing = [
        job_id
        for job_id, job in jobs.items()
        for s in job.get("steps", [])
        if s.get("uses") == "./actions/publish" and s.get("with", {}).get("push") != "false"
    ]
    assert pushing == []
    # The per-platform jobs also run for pull requests: each step that logs in or pushes (by
    # digest) is skipped for them; only the publish job merges, tags and signs.
    build = jobs["build"]["steps"]
    logs_in_or_pushes = [
        s
        for s in build
        if "login-action" in s.get("uses", "")
        or "--push" in s.get("run", "")
        or "upload-artifact" in s.get("uses", "")
    ]
    assert len(logs_in_or_pushes) == 3
    assert {s.get("if") for s in logs_in_or_pushes} == {not_pr}
    merging = [
        job_id
        for job_id, job in jobs.items()
        for s in job.get("steps", [])
        if re.search(r"invoke docker\.(merge|sign)\b", s.get("run", ""))
    ]
    assert merging == ["publish", "publish"]


def test_ci_runs_the_same_tasks_as_a_developer_on_pushes_and_pull_requests() -> None:
    data = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(triggers(data))
    tasks = [
        t
        for _, _, s in run_steps([ROOT / ".github/workflows/ci.yml"])
        for t in INVOKE.findall(s["run"])
    ]
    assert tasks == ["lint.actions", "lint.dockerfile", "test"]


def test_maintenance_runs_weekly_and_by_hand_and_calls_only_tasks() -> None:
    data = workflow("maintenance.yml")
    on = triggers(data)
    assert len(on["schedule"]) == 1
    assert set(on["workflow_dispatch"]["inputs"]) >= {"prune"}
    assert on["workflow_dispatch"]["inputs"]["prune"]["default"] is False
    jobs = data["jobs"]
    assert jobs["rescan"]["strategy"]["matrix"]["ref"] == ["latest", "staging", "production"]
    (scan,) = [s for s in jobs["rescan"]["steps"] if s.get("uses") == "./actions/scan"]
    assert scan["with"]["ref"] == "${{ env.IMAGE }}:${{ matrix.ref }}"
    runs = run_steps([ROOT / ".github/workflows/maintenance.yml"])
    tasks = sorted(t for _, _, s in runs for t in INVOKE.findall(s["run"]))
    assert tasks == ["docker.outdated", "docker.prune", "notify"]
    prune = jobs["prune"]["steps"][-1]
    assert prune["env"]["DELETE"] == "${{ github.event_name == 'schedule' || inputs.prune }}"
    assert 'if [ "$DELETE" = "true" ]; then args+=(--yes); fi' in prune["run"]


def test_dependabot_updates_actions_base_image_and_lock_file_weekly_in_one_group_each() -> None:
    data = load(ROOT / ".github" / "dependabot.yml")
    updates = {u["package-ecosystem"]: u for u in data["updates"]}
    assert set(updates) == {"github-actions", "docker", "uv"}
    for ecosystem, update in updates.items():
        assert update["schedule"]["interval"] == "weekly", ecosystem
        (group,) = update["groups"].values()
        assert group["patterns"] == ["*"], ecosystem
    assert "/actions/*" in updates["github-actions"]["directories"]
    assert updates["docker"]["directory"] == "/docker"


@pytest.mark.parametrize("name", ["docker-build.yml", "maintenance.yml"])
def test_the_workflows_default_image_is_the_pipelines(name: str) -> None:
    import tomllib

    image = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pipeline"]["image"]
    assert workflow(name)["env"]["IMAGE"] == f"${{{{ vars.IMAGE || '{image}' }}}}"
