"""Git refs become image tags, a version and labels: the tag policy, row by row."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from pipeline.config import Settings, TagPolicy
from pipeline.errors import InvalidRefError
from pipeline.gitref import ReleaseContext
from pipeline.release.tags import (
    SemVer,
    compute_labels,
    compute_tags,
    highest_stable,
    sanitize_tag,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
HEAD = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
LONG = "a" * 200
LONG_CUT = "a" * 119 + "-" + hashlib.sha256(LONG.encode()).hexdigest()[:8]
LONG_SHA_UNCUT = f"{LONG_CUT}-0123456"
LONG_SHA_CUT = "a" * 119 + "-" + hashlib.sha256(LONG_SHA_UNCUT.encode()).hexdigest()[:8]


def push(ref: str, **kw: Any) -> ReleaseContext:
    return ReleaseContext(event=kw.pop("event", "push"), ref=ref, sha=SHA, **kw)


def pr(number: int, head: str | None = HEAD, event: str = "pull_request") -> ReleaseContext:
    return ReleaseContext(
        event=event, ref=f"refs/pull/{number}/merge", sha=SHA, pr_number=number, pr_head_sha=head
    )


def local(branch: str | None, dirty: bool = False) -> ReleaseContext:
    ref = f"refs/heads/{branch}" if branch else ""
    return ReleaseContext(event="local", ref=ref, sha=SHA, dirty=dirty)


def policy(**tags: Any) -> Settings:
    return Settings(image="ghcr.io/acme/api-gateway", tags=TagPolicy()._replace(**tags))


DEFAULT = policy()
RELEASE = policy(latest="release")

# (context, policy, released, tags, version, latest)
TABLE: list[tuple[str, ReleaseContext, Settings, tuple[str, ...], list[str], str, bool]] = [
    # -- the table, default policy
    (
        "push main",
        push("refs/heads/main"),
        DEFAULT,
        (),
        ["latest", "main-0123456"],
        "dev-main-0123456",
        True,
    ),
    (
        "push develop",
        push("refs/heads/develop"),
        DEFAULT,
        (),
        ["develop", "develop-0123456"],
        "dev-develop-0123456",
        False,
    ),
    (
        "push feature/Login#2",
        push("refs/heads/feature/Login#2"),
        DEFAULT,
        (),
        ["feature-Login-2", "feature-Login-2-0123456"],
        "dev-feature-Login-2-0123456",
        False,
    ),
    (
        "tag v1.2.3",
        push("refs/tags/v1.2.3"),
        DEFAULT,
        (),
        ["v1.2.3", "1.2.3", "1.2", "1"],
        "1.2.3",
        False,
    ),
    (
        "tag 1.2.3 without v",
        push("refs/tags/1.2.3"),
        DEFAULT,
        (),
        ["v1.2.3", "1.2.3", "1.2", "1"],
        "1.2.3",
        False,
    ),
    (
        "pre-release tag",
        push("refs/tags/v1.0.0-alpha.1"),
        DEFAULT,
        (),
        ["v1.0.0-alpha.1", "1.0.0-alpha.1"],
        "1.0.0-alpha.1",
        False,
    ),
    (
        "build metadata dropped",
        push("refs/tags/v1.2.3+build.5"),
        DEFAULT,
        (),
        ["v1.2.3", "1.2.3", "1.2", "1"],
        "1.2.3",
        False,
    ),
    (
        "0.x has no bare major",
        push("refs/tags/v0.4.1"),
        DEFAULT,
        (),
        ["v0.4.1", "0.4.1", "0.4"],
        "0.4.1",
        False,
    ),
    ("pull request 42", pr(42), DEFAULT, (), ["pr-42"], "pr-42-a1b2c3d", False),
    (
        "local main",
        local("main"),
        DEFAULT,
        (),
        ["dev-main-0123456", "dev"],
        "dev-main-0123456",
        False,
    ),
    (
        "local dirty feature",
        local("feature/x", dirty=True),
        DEFAULT,
        (),
        ["dev-feature-x-0123456-dirty", "dev"],
        "dev-feature-x-0123456-dirty",
        False,
    ),
    # -- latest = "release"
    (
        "release: new highest takes latest",
        push("refs/tags/v2.0.0"),
        RELEASE,
        ("v1.9.0", "1.9.0"),
        ["latest", "v2.0.0", "2.0.0", "2.0", "2"],
        "2.0.0",
        True,
    ),
    (
        "release: hotfix below the highest",
        push("refs/tags/v1.9.1"),
        RELEASE,
        ("v2.0.0", "v1.9.0"),
        ["v1.9.1", "1.9.1", "1.9", "1"],
        "1.9.1",
        False,
    ),
    (
        "release: the first release",
        push("refs/tags/v1.0.0"),
        RELEASE,
        (),
        ["latest", "v1.0.0", "1.0.0", "1.0", "1"],
        "1.0.0",
        True,
    ),
    (
        "release: pre-release never",
        push("refs/tags/v3.0.0-rc.1"),
        RELEASE,
        ("v2.0.0",),
        ["v3.0.0-rc.1", "3.0.0-rc.1"],
        "3.0.0-rc.1",
        False,
    ),
    (
        "release: main keeps its name",
        push("refs/heads/main"),
        RELEASE,
        ("v2.0.0",),
        ["main", "main-0123456"],
        "dev-main-0123456",
        False,
    ),
    (
        "release: junk and pre-releases ignored",
        push("refs/tags/v1.6.0"),
        RELEASE,
        ("latest", "main-0123456", "v2.0.0-rc.1", "1.5.0", "pr-3"),
        ["latest", "v1.6.0", "1.6.0", "1.6", "1"],
        "1.6.0",
        True,
    ),
    (
        "release: re-run of the highest",
        push("refs/tags/v2.0.0"),
        RELEASE,
        ("v2.0.0", "v1.0.0"),
        ["latest", "v2.0.0", "2.0.0", "2.0", "2"],
        "2.0.0",
        True,
    ),
    (
        "release: 10 sorts above 9",
        push("refs/tags/v1.10.0"),
        RELEASE,
        ("1.9.0",),
        ["latest", "v1.10.0", "1.10.0", "1.10", "1"],
        "1.10.0",
        True,
    ),
    (
        "release: 1.0.0 is above 1.0.0-rc.2",
        push("refs/tags/v1.0.0"),
        RELEASE,
        ("1.0.0-rc.2",),
        ["latest", "v1.0.0", "1.0.0", "1.0", "1"],
        "1.0.0",
        True,
    ),
    # -- latest = "never" and other knobs
    (
        "never: main gets its name",
        push("refs/heads/main"),
        policy(latest="never"),
        (),
        ["main", "main-0123456"],
        "dev-main-0123456",
        False,
    ),
    (
        "never: release without latest",
        push("refs/tags/v5.0.0"),
        policy(latest="never"),
        (),
        ["v5.0.0", "5.0.0", "5.0", "5"],
        "5.0.0",
        False,
    ),
    (
        "payload default branch master",
        push("refs/heads/master", default_branch="master"),
        DEFAULT,
        (),
        ["latest", "master-0123456"],
        "dev-master-0123456",
        True,
    ),
    (
        "main is not default when master is",
        push("refs/heads/main", default_branch="master"),
        DEFAULT,
        (),
        ["main", "main-0123456"],
        "dev-main-0123456",
        False,
    ),
    (
        "configured default branch trunk",
        push("refs/heads/trunk"),
        policy(default_branch="trunk"),
        (),
        ["latest", "trunk-0123456"],
        "dev-trunk-0123456",
        True,
    ),
    (
        "sha_length 12",
        push("refs/heads/develop"),
        policy(sha_length=12),
        (),
        ["develop", "develop-0123456789ab"],
        "dev-develop-0123456789ab",
        False,
    ),
    (
        "no v prefix",
        push("refs/tags/v1.2.3"),
        policy(prefix_v=False),
        (),
        ["1.2.3", "1.2", "1"],
        "1.2.3",
        False,
    ),
    (
        "no major",
        push("refs/tags/v1.2.3"),
        policy(major=False),
        (),
        ["v1.2.3", "1.2.3", "1.2"],
        "1.2.3",
        False,
    ),
    (
        "no minor, no major",
        push("refs/tags/v1.2.3"),
        policy(major=False, minor=False),
        (),
        ["v1.2.3", "1.2.3"],
        "1.2.3",
        False,
    ),
    # -- sanitising
    (
        "dots kept",
        push("refs/heads/release/2.x"),
        DEFAULT,
        (),
        ["release-2.x", "release-2.x-0123456"],
        "dev-release-2.x-0123456",
        False,
    ),
    (
        "leading dash and runs",
        push("refs/heads/-weird--name"),
        DEFAULT,
        (),
        ["weird-name", "weird-name-0123456"],
        "dev-weird-name-0123456",
        False,
    ),
    (
        "leading dot",
        push("refs/heads/.hidden"),
        DEFAULT,
        (),
        ["hidden", "hidden-0123456"],
        "dev-hidden-0123456",
        False,
    ),
    (
        "non-ascii",
        push("refs/heads/feat/ümlaut"),
        DEFAULT,
        (),
        ["feat-mlaut", "feat-mlaut-0123456"],
        "dev-feat-mlaut-0123456",
        False,
    ),
    (
        "case kept",
        push("refs/heads/Feature_UPPER"),
        DEFAULT,
        (),
        ["Feature_UPPER", "Feature_UPPER-0123456"],
        "dev-Feature_UPPER-0123456",
        False,
    ),
    (
        "over 128 characters",
        push(f"refs/heads/{LONG}"),
        DEFAULT,
        (),
        [LONG_CUT, LONG_SHA_CUT],
        sanitize_tag(f"dev-{LONG_CUT}-0123456"),
        False,
    ),
    # -- other events
    (
        "pull_request_target",
        pr(7, event="pull_request_target"),
        DEFAULT,
        (),
        ["pr-7"],
        "pr-7-a1b2c3d",
        False,
    ),
    (
        "pull request without head sha",
        pr(8, head=None),
        DEFAULT,
        (),
        ["pr-8"],
        "pr-8-0123456",
        False,
    ),
    (
        "workflow_dispatch on develop",
        push("refs/heads/develop", event="workflow_dispatch"),
        DEFAULT,
        (),
        ["develop", "develop-0123456"],
        "dev-develop-0123456",
        False,
    ),
    (
        "schedule on main",
        push("refs/heads/main", event="schedule"),
        DEFAULT,
        (),
        ["latest", "main-0123456"],
        "dev-main-0123456",
        True,
    ),
    (
        "workflow_dispatch on a tag",
        push("refs/tags/v1.2.3", event="workflow_dispatch"),
        DEFAULT,
        (),
        ["v1.2.3", "1.2.3", "1.2", "1"],
        "1.2.3",
        False,
    ),
    (
        "local detached head",
        local(None),
        DEFAULT,
        (),
        ["dev-detached-0123456", "dev"],
        "dev-detached-0123456",
        False,
    ),
    (
        "local feature/Login#2",
        local("feature/Login#2"),
        DEFAULT,
        (),
        ["dev-feature-Login-2-0123456", "dev"],
        "dev-feature-Login-2-0123456",
        False,
    ),
    # -- more versions
    (
        "pre-release with build",
        push("refs/tags/v1.2.3-rc.1+build.7"),
        DEFAULT,
        (),
        ["v1.2.3-rc.1", "1.2.3-rc.1"],
        "1.2.3-rc.1",
        False,
    ),
    (
        "big numbers",
        push("refs/tags/v10.20.30"),
        DEFAULT,
        (),
        ["v10.20.30", "10.20.30", "10.20", "10"],
        "10.20.30",
        False,
    ),
    ("0.0.1", push("refs/tags/v0.0.1"), DEFAULT, (), ["v0.0.1", "0.0.1", "0.0"], "0.0.1", False),
    (
        "legal odd pre-release",
        push("refs/tags/1.0.0-0A.is.legal"),
        DEFAULT,
        (),
        ["v1.0.0-0A.is.legal", "1.0.0-0A.is.legal"],
        "1.0.0-0A.is.legal",
        False,
    ),
]


@pytest.mark.parametrize(
    ("context", "settings", "released", "tags", "version", "latest"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_each_event_gets_exactly_its_tags_and_version(
    context: ReleaseContext,
    settings: Settings,
    released: tuple[str, ...],
    tags: list[str],
    version: str,
    latest: bool,
) -> None:
    result = compute_tags(context, settings, released)
    assert list(result.tag_names) == tags
    assert result.version == version
    assert result.latest is latest


def test_the_table_has_at_least_forty_rows() -> None:
    assert len(TABLE) >= 40


@pytest.mark.parametrize(
    "ref",
    [
        "refs/tags/v1.2",
        "refs/tags/release-1",
        "refs/tags/v01.2.3",
        "refs/tags/1.2.3.4",
        "refs/tags/v1.2.3-",
        "refs/tags/v1.2.3-01",
        "refs/tags/latest",
        "refs/tags/V1.2.3",
    ],
)
def test_a_tag_that_is_not_a_release_version_is_an_error_naming_the_form(ref: str) -> None:
    with pytest.raises(InvalidRefError) as caught:
        compute_tags(push(ref), DEFAULT)
    assert caught.value.exit_code == 2
    assert caught.value.one_line() == (
        f"tag {ref.removeprefix('refs/tags/')!r} is not a release version: "
        "expected vMAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], e.g. v1.2.3"
    )


def test_a_ref_that_is_neither_branch_tag_nor_pull_request_is_an_error() -> None:
    with pytest.raises(InvalidRefError, match="refs/remotes/origin/main"):
        compute_tags(push("refs/remotes/origin/main"), DEFAULT)


def test_image_names_are_lowercased_in_full_references() -> None:
    result = compute_tags(push("refs/heads/main"), Settings(image="ghcr.io/MyOrg/App"))
    assert result.tags == ("ghcr.io/myorg/app:latest", "ghcr.io/myorg/app:main-0123456")


def test_release_tags_are_immutable_and_minor_major_latest_move() -> None:
    result = compute_tags(push("refs/tags/v2.0.0"), RELEASE, ("v1.0.0",))
    assert result.immutable == ("v2.0.0", "2.0.0")
    assert result.unique == ()
    assert result.moving == ("latest", "2.0", "2")


def test_a_branch_push_writes_its_sha_tag_before_the_moving_ones() -> None:
    result = compute_tags(push("refs/heads/develop"), DEFAULT)
    assert result.unique == ("develop-0123456",)
    assert result.moving == ("develop",)


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("feature/Login#2", "feature-Login-2"),
        ("a//b", "a-b"),
        ("..x", "x"),
        ("-.-x", "x"),
        ("x y\tz", "x-y-z"),
        ("ok_1.2-3", "ok_1.2-3"),
        ("a" * 128, "a" * 128),
        ("a" * 129, "a" * 119 + "-" + hashlib.sha256(b"a" * 129).hexdigest()[:8]),
    ],
)
def test_sanitize_tag(raw: str, tag: str) -> None:
    assert sanitize_tag(raw) == tag
    assert len(sanitize_tag(raw)) <= 128


def test_highest_stable_ignores_pre_releases_and_junk() -> None:
    assert highest_stable(["v1.9.0", "v2.0.0-rc.1", "latest", "1.10.0"]) == SemVer(1, 10, 0)
    assert highest_stable(["latest", "pr-1"]) is None


def test_labels_use_the_commit_time_not_the_clock() -> None:
    context = push("refs/tags/v1.2.3")._replace(commit_time=1764000000, source="https://x/y")
    settings = Settings(
        image="ghcr.io/acme/api-gateway",
        title="api-gateway",
        description="A gateway",
        licenses="Apache-2.0",
        url="https://docs.example",
    )
    assert compute_labels(context, settings, "1.2.3") == {
        "org.opencontainers.image.created": "2025-11-24T16:00:00Z",
        "org.opencontainers.image.revision": SHA,
        "org.opencontainers.image.source": "https://x/y",
        "org.opencontainers.image.version": "1.2.3",
        "org.opencontainers.image.title": "api-gateway",
        "org.opencontainers.image.description": "A gateway",
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.url": "https://docs.example",
    }


def test_two_computations_of_one_commit_are_identical() -> None:
    context = push("refs/heads/main")._replace(commit_time=1764000000)
    assert compute_tags(context, DEFAULT) == compute_tags(context, DEFAULT)
