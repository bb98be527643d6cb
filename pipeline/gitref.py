"""Who, what and where a build is: built once at the edge, from GitHub's environment or from the
local git checkout, then passed down. Nothing below this module reads ``os.environ`` or git."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.clock import parse_utc
from pipeline.errors import ContextError, UsageError

# Every read here is a query: ``--no-optional-locks`` keeps ``git status`` from refreshing the
# index under a lock, so a concurrent ``git commit`` never fails on index.lock (and it is faster).
GIT = ("git", "--no-optional-locks", "-C")
EVENTS = ("push", "pull_request", "pull_request_target", "workflow_dispatch", "schedule", "local")
# Pattern strings: ``re`` compiles them on first use, so a run that never checks one never pays.
_SHA = r"^[0-9a-fA-F]{7,64}$"
_PR_REF = r"^refs/pull/(\d+)/(?:merge|head)$"
_BAD_REF = r"[\s~^:?*\[\\\x00-\x1f\x7f]|\.\.|@\{|//|^/|/\.|^\."


class ReleaseContext(NamedTuple):
    """The facts the tags and labels are computed from.

    ``ref`` is a full git ref (``refs/heads/main``, ``refs/tags/v1.2.3``, ``refs/pull/42/merge``);
    ``event`` is GitHub's event name, or ``local`` for a build outside GitHub Actions.
    """

    event: str
    ref: str
    sha: str
    pr_number: int | None = None
    pr_head_sha: str | None = None
    default_branch: str | None = None
    dirty: bool = False
    commit_time: int | None = None
    source: str = ""

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def tag(self) -> str | None:
        return self.ref.removeprefix("refs/tags/") if self.ref.startswith("refs/tags/") else None

    @property
    def is_pull_request(self) -> bool:
        return self.event in ("pull_request", "pull_request_target")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ReleaseContext:
        """From GitHub Actions' variables and the event payload at ``GITHUB_EVENT_PATH``."""
        event = environ.get("GITHUB_EVENT_NAME", "")
        ref = environ.get("GITHUB_REF", "")
        sha = environ.get("GITHUB_SHA", "")
        if not event or not sha:
            raise ContextError(
                "GITHUB_EVENT_NAME and GITHUB_SHA are not set",
                hint="run inside GitHub Actions, or pass --event, --ref and --sha",
            )
        payload = _read_payload(environ.get("GITHUB_EVENT_PATH", ""))
        pull = payload.get("pull_request") or {}
        pr_number = pull.get("number") or payload.get("number")
        if pr_number is None and (match := re.match(_PR_REF, ref)):
            pr_number = int(match.group(1))
        head_sha = (pull.get("head") or {}).get("sha")
        repo = payload.get("repository") or {}
        commit_time = _iso_to_epoch((payload.get("head_commit") or {}).get("timestamp"))
        server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        repository = environ.get("GITHUB_REPOSITORY", "")
        return cls(
            event=event,
            ref=ref,
            sha=sha,
            pr_number=int(pr_number) if pr_number is not None else None,
            pr_head_sha=head_sha,
            default_branch=repo.get("default_branch"),
            commit_time=commit_time,
            source=f"{server}/{repository}" if repository else "",
        )

    @classmethod
    def from_git(cls, path: Path) -> ReleaseContext:
        """From the local checkout: branch, HEAD, dirtiness and commit time.

        Three ``git`` processes, run at once: ``status --porcelain=v2 --branch`` gives HEAD, the
        branch and the dirtiness in one call; the commit time and the remote are one call each.
        """
        status, time, url = _git_all(
            path,
            ("status", "--porcelain=v2", "--branch", "--no-ahead-behind"),
            ("show", "-s", "--format=%ct", "HEAD"),
            ("remote", "get-url", "origin"),
        )
        head = _parse_status(path, status)
        if head is None:
            raise ContextError(
                f"{path} is not a git checkout with a commit",
                hint="run inside the repository, or pass --ref and --sha",
            )
        sha, branch, dirty = head
        return cls(
            event="local",
            ref=f"refs/heads/{branch}" if branch else "",
            sha=sha,
            dirty=dirty,
            commit_time=int(time) if time and time.isdigit() else None,
            source=_https_url(url or ""),
        )

    def override(
        self,
        *,
        event: str | None = None,
        ref: str | None = None,
        sha: str | None = None,
        pr: int | None = None,
        default_branch: str | None = None,
    ) -> ReleaseContext:
        """This context with command-line flags applied; flags describe a CI event, not a local
        build, so ``--ref`` or ``--pr`` without ``--event`` imply ``push`` or ``pull_request``."""
        changes: dict[str, Any] = {}
        if ref is not None:
            changes["ref"] = normalize_ref(ref)
        if sha is not None:
            changes["sha"] = check_sha(sha)
            changes["dirty"] = False
        if pr is not None:
            if pr <= 0:
                raise UsageError(f"--pr {pr}: a pull request number is a positive integer")
            changes["pr_number"] = pr
            changes["ref"] = changes.get("ref") or f"refs/pull/{pr}/merge"
            changes["pr_head_sha"] = changes.get("sha") or self.sha
        if default_branch is not None:
            changes["default_branch"] = default_branch
        if event is not None:
            if event not in EVENTS:
                raise UsageError(f"--event {event!r}: expected one of {', '.join(EVENTS)}")
            changes["event"] = event
        elif pr is not None:
            changes["event"] = "pull_request"
        elif ref is not None and self.event == "local":
            changes["event"] = "push"
        new = self._replace(**changes)
        if new.event != "local":
            new = new._replace(dirty=False)
        if new.is_pull_request and new.pr_number is None:
            raise UsageError("a pull_request event needs a number: pass --pr N")
        if new.is_pull_request and new.pr_head_sha is None:
            new = new._replace(pr_head_sha=new.sha)
        return new


def from_flags(
    *, event: str | None, ref: str | None, sha: str | None, pr: int | None
) -> ReleaseContext:
    """A context made of flags alone, for use outside any git checkout."""
    if sha is None:
        raise ContextError(
            "not in a git checkout and no --sha given",
            hint="run inside the repository, or pass --ref and --sha (and --event, --pr)",
        )
    base = ReleaseContext(event=event or "push", ref="", sha=check_sha(sha))
    return base.override(event=event, ref=ref, pr=pr)


def normalize_ref(ref: str) -> str:
    """``refs/...`` stays as is; a short name is a branch. A name git would refuse
    (``git check-ref-format``: spaces, ``..``, ``~^:?*[``, an empty name) is a usage error."""
    ref = ref.strip()
    if not ref:
        raise UsageError("--ref is empty: pass refs/heads/NAME, refs/tags/vX.Y.Z or a branch name")
    full = ref if ref.startswith("refs/") else f"refs/heads/{ref}"
    kind, _, name = full.removeprefix("refs/").partition("/")
    if not name or re.search(_BAD_REF, name) or name.endswith((".lock", "/", ".")):
        word = {"heads": "branch", "tags": "tag", "pull": "pull request"}.get(kind, kind)
        raise UsageError(
            f"--ref {ref!r}: not a valid git ref ({'a malformed' if name else 'an empty'} "
            f"{word} name)",
            hint="pass refs/heads/NAME, refs/tags/vX.Y.Z or a branch name",
        )
    return full


def check_sha(sha: str) -> str:
    if not re.match(_SHA, sha):
        raise UsageError(f"--sha {sha!r}: expected a hex commit id of at least 7 digits")
    return sha.lower()


def _read_payload(path: str) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ContextError(f"GITHUB_EVENT_PATH {path}: cannot read the payload ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _iso_to_epoch(value: Any) -> int | None:

    if not isinstance(value, str) or not value:
        return None
    try:
        return int(parse_utc(value).timestamp())
    except ValueError:
        return None


def _git(path: Path, *args: str) -> str | None:
    try:
        out = subprocess.run([*GIT, str(path), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_all(path: Path, *commands: tuple[str, ...]) -> list[str | None]:
    """Like ``_git`` for each command, the commands running concurrently."""
    try:
        running = [
            subprocess.Popen(
                [*GIT, str(path), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for args in commands
        ]
    except FileNotFoundError:
        return [None] * len(commands)
    results: list[str | None] = []
    for process in running:
        stdout, _ = process.communicate()
        results.append(stdout.strip() if process.returncode == 0 else None)
    return results


def _parse_status(path: Path, status: str | None) -> tuple[str, str | None, bool] | None:
    """HEAD's commit, its branch (None when detached) and whether the work tree is dirty, from
    ``git status --porcelain=v2 --branch``; None without a commit. Where that fails (not a
    checkout, a bare repository, inside ``.git``, an old git), the separate calls decide."""
    headers: dict[str, str] = {}
    dirty = False
    for line in (status or "").splitlines():
        if line.startswith("# "):
            key, _, value = line[2:].partition(" ")
            headers[key] = value
        elif line.strip():
            dirty = True
    if status is None or "branch.oid" not in headers:
        sha = _git(path, "rev-parse", "HEAD")
        if sha is None:
            return None
        branch = _branch(path)
        return sha, branch, bool((_git(path, "status", "--porcelain") or "").strip())
    sha = headers["branch.oid"]
    if sha == "(initial)":
        return None
    branch = headers.get("branch.head")
    if branch in (None, "(detached)"):  # detached, or a branch really named "(detached)"
        branch = _branch(path)
    return sha, branch, dirty


def _branch(path: Path) -> str | None:
    return _git(path, "symbolic-ref", "--short", "-q", "HEAD")


def _https_url(url: str) -> str:
    """The remote as an https URL without credentials (it becomes a label)."""
    from pipeline.redact import public_url

    return public_url(url)


class RefFlags(NamedTuple):
    """The five git flags every task that names a build takes (``--event --ref --sha --pr
    --default-branch``); ``None`` means "from GitHub's environment or the checkout"."""

    event: str | None = None
    ref: str | None = None
    sha: str | None = None
    pr: int | None = None
    default_branch: str | None = None

    @classmethod
    def of(
        cls,
        event: str | None = None,
        ref: str | None = None,
        sha: str | None = None,
        pr: int | str | None = None,
        default_branch: str | None = None,
    ) -> RefFlags:
        """From Invoke's flag values (``--pr`` may arrive as a string)."""
        return cls(event, ref, sha, int(pr) if pr is not None else None, default_branch)


def resolve(environ: Mapping[str, str], cwd: Path, flags: RefFlags | None = None) -> ReleaseContext:
    """The edge: GitHub's environment in Actions, else the local checkout, else flags alone;
    then the flags, then ``SOURCE_DATE_EPOCH``."""
    flags = flags or RefFlags()
    event, ref, sha, pr = flags.event, flags.ref, flags.sha, flags.pr
    default_branch = flags.default_branch
    if environ.get("GITHUB_ACTIONS") == "true":
        context = ReleaseContext.from_env(environ)
    else:
        try:
            context = ReleaseContext.from_git(cwd)
        except ContextError:
            if sha is None and ref is None and pr is None and event is None:
                raise
            context = from_flags(event=event, ref=ref, sha=sha, pr=pr)
    context = context.override(event=event, ref=ref, sha=sha, pr=pr, default_branch=default_branch)
    epoch = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        if not epoch.isdigit():
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r}: expected seconds since 1970")
        context = context._replace(commit_time=int(epoch))
    elif context.commit_time is None:
        time = _git(cwd, "show", "-s", "--format=%ct", context.sha)
        if time and time.isdigit():
            context = context._replace(commit_time=int(time))
    return context
