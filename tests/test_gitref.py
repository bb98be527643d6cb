"""The build context is built once at the edge: from GitHub's environment or from local git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.errors import ContextError, UsageError
from pipeline.gitref import RefFlags, ReleaseContext, resolve

EVENTS = Path(__file__).parent / "fixtures" / "github"


def github_env(event: str, payload: str, ref: str, sha: str) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(EVENTS / payload),
        "GITHUB_REF": ref,
        "GITHUB_SHA": sha,
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/api-gateway",
    }


def test_a_push_payload_gives_ref_sha_default_branch_and_commit_time() -> None:
    sha = "9f2c4e1b7d3a5f60c8e2b1d4a7f9c3e5b6d8a0f1"
    env = github_env("push", "push-main.json", "refs/heads/main", sha)
    context = ReleaseContext.from_env(env)
    assert context == ReleaseContext(
        event="push",
        ref="refs/heads/main",
        sha=sha,
        default_branch="main",
        commit_time=1795166130,  # 2026-11-20T10:15:30+01:00
        source="https://github.com/acme/api-gateway",
    )


def test_a_pull_request_payload_gives_the_number_and_the_head_sha_not_the_merge_sha() -> None:
    merge = "e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4"
    env = github_env("pull_request", "pull_request.json", "refs/pull/42/merge", merge)
    context = ReleaseContext.from_env(env)
    assert (context.event, context.pr_number, context.sha) == ("pull_request", 42, merge)
    assert context.pr_head_sha == "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


def test_a_tag_push_payload_gives_the_tag() -> None:
    sha = "4e6a8c0d2f4b6e8a0c2e4a6c8e0a2c4e6a8c0d2f"
    context = ReleaseContext.from_env(github_env("push", "push-tag.json", "refs/tags/v1.2.3", sha))
    assert (context.tag, context.branch, context.commit_time) == ("v1.2.3", None, 1795593600)


def test_a_workflow_dispatch_payload_gives_the_branch_and_default_branch() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    env = github_env("workflow_dispatch", "workflow_dispatch.json", "refs/heads/develop", sha)
    context = ReleaseContext.from_env(env)
    assert (context.branch, context.default_branch, context.pr_number) == ("develop", "main", None)


def test_github_environment_without_event_name_is_a_clear_error() -> None:
    with pytest.raises(ContextError, match="GITHUB_EVENT_NAME and GITHUB_SHA are not set"):
        ReleaseContext.from_env({"GITHUB_ACTIONS": "true"})


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "feature/Login#2")
    (tmp_path / "a.txt").write_text("a")
    git(tmp_path, "add", "a.txt")
    git(
        tmp_path,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-qm",
        "one",
        "--date=2026-01-02T03:04:05Z",
    )
    return tmp_path


def test_a_local_checkout_gives_branch_head_and_commit_time(repo: Path) -> None:
    context = ReleaseContext.from_git(repo)
    assert context.event == "local"
    assert context.ref == "refs/heads/feature/Login#2"
    assert context.sha == git(repo, "rev-parse", "HEAD")
    assert context.dirty is False
    assert context.commit_time == int(git(repo, "show", "-s", "--format=%ct"))


def test_uncommitted_changes_make_a_local_build_dirty(repo: Path) -> None:
    (repo / "a.txt").write_text("changed")
    assert ReleaseContext.from_git(repo).dirty is True


def test_untracked_files_make_a_local_build_dirty(repo: Path) -> None:
    (repo / "new.txt").write_text("new")
    assert ReleaseContext.from_git(repo).dirty is True


def test_a_detached_head_has_no_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    context = ReleaseContext.from_git(repo)
    assert (context.ref, context.branch, context.sha) == ("", None, git(repo, "rev-parse", "HEAD"))


def test_a_branch_really_named_detached_is_still_a_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "(detached)")
    assert ReleaseContext.from_git(repo).ref == "refs/heads/(detached)"


def test_a_tag_named_like_the_branch_does_not_change_the_branch(repo: Path) -> None:
    git(repo, "tag", "feature/Login#2")
    assert ReleaseContext.from_git(repo).ref == "refs/heads/feature/Login#2"


def test_the_origin_remote_is_the_source_as_an_https_url(repo: Path) -> None:
    git(repo, "remote", "add", "origin", "git@github.com:Acme/Api-Gateway.git")
    assert ReleaseContext.from_git(repo).source == "https://github.com/Acme/Api-Gateway"


def test_inside_the_git_directory_head_and_branch_are_still_read(repo: Path) -> None:
    context = ReleaseContext.from_git(repo / ".git")
    assert (context.ref, context.sha, context.dirty) == (
        "refs/heads/feature/Login#2",
        git(repo, "rev-parse", "HEAD"),
        False,
    )
    assert context.commit_time == int(git(repo, "show", "-s", "--format=%ct"))


def test_a_repository_without_commits_is_a_clear_error(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    with pytest.raises(ContextError) as caught:
        ReleaseContext.from_git(tmp_path)
    assert caught.value.one_line() == (
        f"{tmp_path} is not a git checkout with a commit: "
        "run inside the repository, or pass --ref and --sha"
    )


def test_a_directory_outside_git_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContextError) as caught:
        ReleaseContext.from_git(tmp_path)
    assert caught.value.one_line() == (
        f"{tmp_path} is not a git checkout with a commit: "
        "run inside the repository, or pass --ref and --sha"
    )


def test_flags_turn_a_local_build_into_the_event_they_describe(repo: Path) -> None:
    context = resolve({}, repo, RefFlags(ref="refs/tags/v1.2.3", sha="abcdef0123456"))
    assert (context.event, context.tag, context.sha, context.dirty) == (
        "push",
        "v1.2.3",
        "abcdef0123456",
        False,
    )


def test_pr_flag_implies_a_pull_request_event_with_the_sha_as_head(repo: Path) -> None:
    context = resolve({}, repo, RefFlags(pr=42, sha="a1b2c3d4e5f6"))
    assert (context.event, context.pr_number, context.pr_head_sha, context.ref) == (
        "pull_request",
        42,
        "a1b2c3d4e5f6",
        "refs/pull/42/merge",
    )


def test_flags_alone_work_outside_git(tmp_path: Path) -> None:
    context = resolve({}, tmp_path, RefFlags(ref="main", sha="0123456789abcdef"))
    assert (context.event, context.ref, context.sha) == (
        "push",
        "refs/heads/main",
        "0123456789abcdef",
    )


def test_source_date_epoch_overrides_the_commit_time(repo: Path) -> None:
    assert resolve({"SOURCE_DATE_EPOCH": "1700000000"}, repo).commit_time == 1700000000


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"sha": "xyz"}, "--sha 'xyz': expected a hex commit id of at least 7 digits"),
        ({"event": "release"}, "--event 'release': expected one of push, pull_request,"),
        ({"pr": 0}, "--pr 0: a pull request number is a positive integer"),
        ({"event": "pull_request"}, "a pull_request event needs a number: pass --pr N"),
    ],
)
def test_bad_flags_are_usage_errors(repo: Path, flags: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        resolve({}, repo, RefFlags(**flags))  # type: ignore[arg-type]
    assert caught.value.one_line().startswith(message)
