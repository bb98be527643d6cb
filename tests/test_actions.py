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
    ("setup", "Name today's scanner cache"),
}

# The tasks and flags the workflows call that the pipeline does not have yet: the workflow half of
# issue #14 is written against these contracts, the pipeline half lands them. (task, flag), with
# flag None for a task that does not exist yet (all its flags are then pending with it).
PENDING = {
    # Push the build record's local image (the one docker.test and docker.scan checked) by
    # digest only, no tag, and write build/digests/OS-ARCH for docker.merge.
    ("docker.push", "--by-digest"),
    # Write the index's immutable and unique tags only; print digest=... (and GITHUB_OUTPUT).
    ("docker.merge", "--no-moving-tags"),
    # Write this ref's moving tags onto --digest in --image, refusing a digest that is unsigned.
    ("docker.tag-moving", None),
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
        # They run no build, push, scanner or signer (a cache key naming Trivy is not a run).
        assert not re.search(
            r"docker (build|push|buildx build)\b|\btrivy(?![\w-])|cosign", step["run"]
        )
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
def test_every_task_named_exists_and_takes_the_flags_given_or_is_a_pending_contract(
    path: Path, owner: str, step: dict[str, Any]
) -> None:
    called = INVOKE.findall(step["run"])
    if not called:
        return
    (name,) = called
    if (name, None) in PENDING:
        assert name not in namespace().task_names, f"`invoke {name}` exists: drop it from PENDING"
        return
    assert name in namespace().task_names, f"`invoke {name}`: no such task"
    unknown = set(FLAG.findall(step["run"])) - task_flags(name)
    pending = {flag for task, flag in PENDING if task == name}
    assert unknown - pending == set(), f"`invoke {name}` takes no {sorted(unknown - pending)}"


def test_every_pending_contract_is_called_by_a_workflow() -> None:
    called = {
        (name, flag)
        for _, _, step in ACTION_RUNS + WORKFLOW_RUNS
        for name in INVOKE.findall(step["run"])
        for flag in [None, *FLAG.findall(step["run"])]
    }
    assert PENDING - called == set()


@pytest.mark.parametrize(
    ("task", "flag"),
    [
        pytest.param(
            task,
            flag,
            marks=pytest.mark.xfail(
                strict=True, reason=f"needs {task}{' ' + flag if flag else ''} (pipeline, pending)"
            ),
        )
        for task, flag in sorted(PENDING, key=str)
    ],
    ids=[f"{task} {flag or ''}".strip() for task, flag in sorted(PENDING, key=str)],
)
def test_each_pending_contract_exists_in_the_pipeline(task: str, flag: str | None) -> None:
    assert task in namespace().task_names
    assert flag is None or flag in task_flags(task)


def test_every_cosign_installer_installs_the_same_cosign() -> None:
    releases = {
        step.get("with", {}).get("cosign-release")
        for path in WORKFLOWS
        for _, step in steps_of(path)
        if "sigstore/cosign-installer@" in step.get("uses", "")
    }
    assert releases == {"v2.6.4"}, "the cosign the pipeline's `.sig` signatures are made with"


@pytest.mark.parametrize(
    ("path", "owner", "step"), ACTION_RUNS + WORKFLOW_RUNS, ids=ids(ACTION_RUNS + WORKFLOW_RUNS)
)
def test_scripts_take_inputs_through_env_never_expanded_and_never_as_invoke_variables(
    path: Path, owner: str, step: dict[str, Any]
) -> None:
    assert "${{" not in step["run"], "an expression in a script is a template injection"
    assert [k for k in step.get("env", {}) if k.startswith("INVOKE_")] == []


PINNABLE = sorted(
    p
    for p in [*(ROOT / ".github").rglob("*"), *(ROOT / "actions").rglob("*")]
    if p.suffix in (".yml", ".yaml", ".md")
)


@pytest.mark.parametrize("path", PINNABLE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_remote_action_in_github_actions_and_the_readmes_is_pinned_with_its_version(
    path: Path,
) -> None:
    uses = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.match(r"^\s*(-\s+)?uses:", line) and not re.match(r"^\s*(-\s+)?uses:\s+\./", line)
    ]
    unpinned = [line.strip() for line in uses if not PINNED.match(line)]
    assert unpinned == [], "not pinned by a 40-hex SHA with a `# vX.Y.Z` comment"


def test_the_pinning_check_refuses_a_tag_a_short_sha_and_a_missing_comment() -> None:
    sha = "3d3c42e5aac5ba805825da76410c181273ba90b1"
    assert PINNED.match(f"      - uses: actions/checkout@{sha} # v7.0.1")
    assert not PINNED.match("      - uses: actions/checkout@v7")
    assert not PINNED.match(f"      - uses: actions/checkout@{sha[:12]} # v7.0.1")
    assert not PINNED.match(f"      - uses: actions/checkout@{sha}")
    assert not PINNED.match(f"      - uses: actions/checkout@{sha} # v7")


def remote_uses() -> set[tuple[str, str]]:
    """(action, "SHA # vX.Y.Z") of every pinned use in a workflow or action (the READMEs'
    examples are only checked for pinning: Dependabot does not update them)."""
    found = set()
    for path in [*ACTIONS, *WORKFLOWS, *(ROOT / "tests" / "workflows").glob("*.yml")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if match := PINNED.match(line):
                found.add((match.group(1), line.split("@", 1)[1].strip()))
    return found


def test_each_pinned_action_names_one_version_and_has_a_local_stand_in_for_act() -> None:
    by_action: dict[str, set[str]] = {}
    for action, pin in remote_uses():
        by_action.setdefault(action, set()).add(pin)
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
        "require",
        "cache",
    }
    assert all("default" in spec for spec in data["inputs"].values())
    # No token unless the caller hands one over: a job that does not push holds none.
    assert data["inputs"]["password"]["default"] == ""
    (login,) = [s for s in data["runs"]["steps"] if "login-action" in s.get("uses", "")]
    assert login["if"] == (
        "inputs.push == 'true' && github.event_name != 'pull_request' && inputs.password != ''"
    )
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
    # One group for the workflow, or one per job (deploy.yml: per environment; both levels
    # with one group would deadlock).
    groups = [data.get("concurrency", {}).get("group")] + [
        job.get("concurrency", {}).get("group") for job in data["jobs"].values()
    ]
    assert groups[0] or all(groups[1:]), "no concurrency group"
    for job_id, job in data["jobs"].items():
        grants = job.get("permissions", {})
        if "uses" in job:  # a called workflow: its own jobs are checked, with their timeouts
            assert job["uses"].startswith("./.github/workflows/"), job_id
            assert set(grants.values()) <= {"read", "write"}, f"{job_id}: {grants}"
            continue
        uses = [s.get("uses", "") for s in job.get("steps", [])]
        runs = " ".join(s.get("run", "") for s in job.get("steps", []))
        uploads_sarif = any("upload-sarif" in u for u in uses)
        assert (grants.get("security-events") == "write") == uploads_sarif, job_id
        if grants.get("id-token") == "write":
            assert any("attest" in u or "publish" in u for u in uses), f"{job_id}: id-token"
        assert "docker.sign" not in runs or grants.get("id-token") == "write"
        assert set(grants.values()) <= {"read", "write"}, f"{job_id}: {grants}"
        assert job.get("timeout-minutes"), f"{job_id}: no timeout"


def test_only_the_sign_job_may_sign_and_attest_and_only_the_push_path_uploads_sarif() -> None:
    jobs = workflow("docker-build.yml")["jobs"]
    with_id_token = {j for j, job in jobs.items() if job.get("permissions", {}).get("id-token")}
    assert with_id_token == {"sign"}
    with_sarif = {j for j, job in jobs.items() if job.get("permissions", {}).get("security-events")}
    assert with_sarif == {"build"}
    attests = {j for j, job in jobs.items() if "attestations" in job.get("permissions", {})}
    assert attests == {"sign"}


def test_docker_build_runs_on_main_develop_release_tags_and_pull_requests_to_main() -> None:
    on = triggers(workflow("docker-build.yml"))
    assert on["push"] == {"branches": ["main", "develop"], "tags": ["v*"]}
    assert on["pull_request"] == {"branches": ["main"]}


@pytest.mark.parametrize("job_id", ["verify", "build"])
def test_docker_build_builds_each_platform_on_its_own_runner_requiring_every_scanner(
    job_id: str,
) -> None:
    job = workflow("docker-build.yml")["jobs"][job_id]
    include = job["strategy"]["matrix"]["include"]
    assert [(i["platform"], i["runner"]) for i in include] == [
        ("linux/amd64", "ubuntu-24.04"),
        ("linux/arm64", "ubuntu-24.04-arm"),
    ]
    (publish,) = [s for s in job["steps"] if s.get("uses") == "./actions/publish"]
    assert publish["with"]["push"] == "false"
    assert publish["with"]["require"] == "all"
    assert "password" not in publish["with"], "building, testing and scanning needs no token"
    assert "cache" not in publish["with"], "the task's default in Actions: GitHub's cache"
    runtime = [s for s in job["steps"] if "ghaction-github-runtime" in s.get("uses", "")]
    assert len(runtime) == 1, "buildx in a run step needs the runtime variables"
    (setup,) = [s for s in job["steps"] if s.get("uses") == "./actions/setup"]
    assert setup["with"]["trivy-cache-dir"] == "${{ env.TRIVY_CACHE_DIR }}"


def test_the_push_path_keeps_one_build_cache_scope_per_platform() -> None:
    include = workflow("docker-build.yml")["jobs"]["build"]["strategy"]["matrix"]["include"]
    assert [i["scope"] for i in include] == ["linux-amd64", "linux-arm64"]


@pytest.mark.parametrize("name", ["docker-build.yml", "maintenance.yml"])
def test_the_scanning_workflows_keep_trivys_database_in_one_folder_the_cache_restores(
    name: str,
) -> None:
    assert workflow(name)["env"]["TRIVY_CACHE_DIR"] == (
        "${{ vars.TRIVY_CACHE_DIR || format('{0}/build/trivy', github.workspace) }}"
    )


def test_the_setup_action_caches_trivys_database_under_a_daily_key() -> None:
    steps = load(ROOT / "actions" / "setup" / "action.yml")["runs"]["steps"]
    (name,) = [s for s in steps if s.get("id") == "trivy"]
    assert "date -u +%Y-%m-%d" in name["run"]
    (cache,) = [s for s in steps if "actions/cache@" in s.get("uses", "")]
    assert cache["with"] == {
        "path": "${{ inputs.trivy-cache-dir }}",
        "key": "${{ steps.trivy.outputs.key }}",
        "restore-keys": "trivy-db-${{ runner.os }}-",
    }
    assert name["if"] == cache["if"] == "inputs.trivy-cache-dir != ''"


def test_pull_requests_run_only_the_verify_job_which_holds_contents_read_only() -> None:
    jobs = workflow("docker-build.yml")["jobs"]
    assert jobs["verify"]["if"] == "${{ github.event_name == 'pull_request' }}"
    assert jobs["verify"]["permissions"] == {"contents": "read"}
    assert jobs["build"]["if"] == "${{ github.event_name != 'pull_request' }}"
    # Every other job but notify follows build (so never runs for a pull request).
    for job_id in set(jobs) - {"verify", "build", "notify"}:
        assert upstream(jobs, job_id) >= {"build"}, job_id
    steps = jobs["verify"]["steps"]
    assert [s for s in steps if "login-action" in s.get("uses", "") or "run" in s] == []
    assert [s for s in steps if "artifact" in s.get("uses", "")] == []


def upstream(jobs: dict[str, Any], job_id: str) -> set[str]:
    needs = jobs[job_id].get("needs", [])
    direct = {needs} if isinstance(needs, str) else set(needs)
    return direct.union(*(upstream(jobs, n) for n in direct))


def invocations(job: dict[str, Any]) -> list[str]:
    """The `uv run invoke ...` command lines of a job's run steps, in order."""
    return [
        line.strip()
        for s in job.get("steps", [])
        for line in s.get("run", "").splitlines()
        if INVOKE.search(line)
    ]


def test_the_push_path_pushes_the_image_it_tested_by_digest_without_rebuilding_it() -> None:
    jobs = workflow("docker-build.yml")["jobs"]
    steps = jobs["build"]["steps"]
    order = [s.get("uses") or INVOKE.findall(s["run"])[0] for s in steps]
    tested = order.index("./actions/publish")
    pushed = order.index("docker.push")
    assert tested < pushed
    assert invocations(jobs["build"]) == ["run: uv run invoke docker.push --by-digest"[5:]]
    everywhere = [line for job in jobs.values() for line in invocations(job)]
    assert [line for line in everywhere if "docker.build" in line] == [], "no rebuild"
    upload = steps[pushed + 1]
    assert "upload-artifact" in upload["uses"] and upload["with"]["path"] == "build/digests/*"


def test_the_index_is_signed_and_attested_by_digest_before_any_moving_tag_is_written() -> None:
    jobs = workflow("docker-build.yml")["jobs"]
    assert invocations(jobs["merge"]) == [
        'uv run invoke docker.merge --digests-dir build/digests --image "$IMAGE" --no-moving-tags'
    ]
    assert invocations(jobs["sign"]) == ['uv run invoke docker.sign --ref "$IMAGE@$DIGEST"']
    (attest,) = [s for s in jobs["sign"]["steps"] if "actions/attest@" in s.get("uses", "")]
    assert attest["with"]["subject-digest"] == "${{ needs.merge.outputs.digest }}"
    assert invocations(jobs["tag"]) == [
        'uv run invoke docker.tag-moving --image "$IMAGE" --digest "$DIGEST"'
    ]
    assert upstream(jobs, "tag") >= {"merge", "sign"}
    # No `if:` (so no always()): a failed or skipped signature leaves every moving tag alone.
    assert [j for j in ("merge", "sign", "tag") if "if" in jobs[j]] == []
    moving = [
        job_id
        for job_id, job in jobs.items()
        for line in invocations(job)
        if re.search(r"docker\.(merge|push|tag-moving)\b", line)
        and "--no-moving-tags" not in line
        and "--by-digest" not in line
    ]
    assert moving == ["tag"], "only the tag job writes moving tags"
    digests = {
        job_id: s["env"]["DIGEST"]
        for job_id in ("sign", "tag")
        for s in jobs[job_id]["steps"]
        if "DIGEST" in s.get("env", {})
    }
    assert digests == {j: "${{ needs.merge.outputs.digest }}" for j in ("sign", "tag")}


def test_main_deploys_to_staging_and_release_tags_to_production_after_the_moving_tags() -> None:
    jobs = workflow("docker-build.yml")["jobs"]
    calls = {
        job_id: (job["if"], job["with"]["environment"])
        for job_id, job in jobs.items()
        if job.get("uses") == "./.github/workflows/deploy.yml"
    }
    assert calls == {
        "staging": ("${{ github.ref == 'refs/heads/main' }}", "staging"),
        "production": ("${{ startsWith(github.ref, 'refs/tags/v') }}", "production"),
    }
    for job_id in calls:
        assert upstream(jobs, job_id) >= {"build", "merge", "sign", "tag"}
        assert jobs[job_id]["with"]["digest"] == "${{ needs.merge.outputs.digest }}"
        assert jobs[job_id]["permissions"] == {"contents": "read", "packages": "write"}
    assert set(jobs["notify"]["needs"]) == set(jobs) - {"notify"}


def test_deploy_is_called_after_a_build_or_dispatched_by_hand_to_roll_back() -> None:
    on = triggers(workflow("deploy.yml"))
    assert set(on) == {"workflow_call", "workflow_dispatch"}
    assert set(on["workflow_call"]["inputs"]) == {"environment", "digest"}
    assert on["workflow_dispatch"]["inputs"]["environment"]["options"] == [
        "staging",
        "production",
    ]
    jobs = workflow("deploy.yml")["jobs"]
    assert jobs["deploy"]["if"] == "${{ github.event_name != 'workflow_dispatch' }}"
    assert jobs["rollback"]["if"] == "${{ github.event_name == 'workflow_dispatch' }}"
    assert invocations(jobs["deploy"]) == [
        'uv run invoke docker.promote --to "$ENVIRONMENT" --ref "$DIGEST" --image "$IMAGE"',
        'uv run invoke deploy.k8s --env "$ENVIRONMENT" --image "$IMAGE@$DIGEST"',
    ]
    assert invocations(jobs["rollback"]) == [
        'uv run invoke docker.rollback "${args[@]}"',
        'uv run invoke deploy.k8s --env "$ENVIRONMENT" --image "$IMAGE:$ENVIRONMENT"',
    ]


@pytest.mark.parametrize("job_id", ["deploy", "rollback"])
def test_each_deploy_job_runs_in_its_environment_one_at_a_time_never_cancelled(
    job_id: str,
) -> None:
    job = workflow("deploy.yml")["jobs"][job_id]
    # GitHub applies the environment's protection rules (production: required reviewers).
    assert job["environment"] == {"name": "${{ inputs.environment }}"}
    assert job["concurrency"] == {
        "group": "deploy-${{ inputs.environment }}",
        "cancel-in-progress": False,
    }
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    for step in job["steps"]:
        if "run" in step and "ENVIRONMENT" in step["run"]:
            assert step["env"]["ENVIRONMENT"] == "${{ inputs.environment }}"


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
    matrix = jobs["rescan"]["strategy"]["matrix"]
    assert matrix["ref"] == ["latest", "staging", "production"]
    assert [t["platform"] for t in matrix["target"]] == ["linux/amd64", "linux/arm64"]
    (scan,) = [s for s in jobs["rescan"]["steps"] if s.get("uses") == "./actions/scan"]
    assert scan["with"] == {
        "ref": "${{ env.IMAGE }}:${{ matrix.ref }}",
        "platform": "${{ matrix.target.platform }}",
        "require": "all",
        "severity": "${{ inputs.severity }}",
        "username": "${{ github.actor }}",
        "password": "${{ secrets.GITHUB_TOKEN }}",
    }
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


def test_the_scan_action_logs_docker_and_trivy_in_with_the_credentials_it_is_given() -> None:
    data = load(ROOT / "actions" / "scan" / "action.yml")
    assert data["inputs"]["password"]["default"] == ""
    login, rescan = data["runs"]["steps"]
    assert "docker/login-action@" in login["uses"]
    assert login["if"] == "inputs.password != ''"
    assert login["with"] == {
        "registry": "${{ inputs.registry }}",
        "username": "${{ inputs.username }}",
        "password": "${{ inputs.password }}",
    }
    assert (
        rescan["env"]["TRIVY_USERNAME"] == "${{ inputs.password != '' && inputs.username || '' }}"
    )
    assert rescan["env"]["TRIVY_PASSWORD"] == "${{ inputs.password }}"
    assert rescan["env"]["REGISTRY_PASSWORD"] == "${{ inputs.password }}"
    assert 'args+=(--platform "$PLATFORM")' in rescan["run"]


@pytest.mark.parametrize("name", ["docker-build.yml", "maintenance.yml", "deploy.yml"])
def test_the_workflows_default_image_is_the_pipelines(name: str) -> None:
    import tomllib

    image = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pipeline"]["image"]
    assert workflow(name)["env"]["IMAGE"] == f"${{{{ vars.IMAGE || '{image}' }}}}"
