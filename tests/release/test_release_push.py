"""docker.push: one index, immutable release tags, moving tags last, retries, re-runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from faultproxy import FaultProxy, build_image, push_half_way, remove_images
from fixtures_ghcr import Remote, docker_config

from pipeline.build.record import BuildRecord
from pipeline.oci.reference import parse_reference
from pipeline.registry.auth import Credentials
from pipeline.registry.client import RegistryClient, RegistryError
from pipeline.registry.retry import RetryPolicy, TransientRegistryError, is_transient
from pipeline.release.push import login, push, update_record
from pipeline.release.tagplan import TagConflictError, moving_tags, plan_tags, staging_tag

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=4, max_seconds=20, initial=0.05, max_wait=0.2, jitter=0.05)
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
PLATFORMS = ["linux/amd64", "linux/arm64"]


def release(version: str = "1.2.3", **kw: object) -> BuildRecord:
    tags = [f"v{version}", version, ".".join(version.split(".")[:2]), version.split(".")[0]]
    return BuildRecord(
        image=str(kw.get("image", "ghcr.io/acme/app")),
        version=version,
        tags=tags,
        platforms=PLATFORMS,
        immutable=tags[:2],
    )


def branch(image: str = "ghcr.io/acme/app", sha: str = "abc1234") -> BuildRecord:
    return BuildRecord(
        image=image,
        version=f"dev-main-{sha}",
        tags=["latest", f"main-{sha}"],
        platforms=PLATFORMS,
        unique=[f"main-{sha}"],
        latest=True,
    )


# --- the plan (pure) ---


def test_a_first_release_writes_its_fixed_tags_then_its_moving_tags() -> None:
    plan = plan_tags(release(), A, {"v1.2.3": None, "1.2.3": None})
    assert plan.conflicts == ()
    assert plan.fixed == ("v1.2.3", "1.2.3")
    assert plan.moving == ("1.2", "1")
    assert plan.unchanged == ()


def test_a_release_tag_at_another_digest_is_a_conflict() -> None:
    plan = plan_tags(release(), A, {"v1.2.3": B, "1.2.3": None})
    assert plan.conflicts == (("v1.2.3", B),)


def test_a_release_tag_at_the_same_digest_is_unchanged() -> None:
    plan = plan_tags(release(), A, {"v1.2.3": A, "1.2.3": A})
    assert plan.conflicts == ()
    assert plan.unchanged == ("v1.2.3", "1.2.3")
    assert plan.fixed == ()


def test_a_unique_tag_may_be_rewritten_by_a_rebuild_of_its_commit() -> None:
    plan = plan_tags(branch(), A, {"main-abc1234": B})
    assert plan.conflicts == ()
    assert plan.fixed == ("main-abc1234",)
    assert plan.moving == ("latest",)


@pytest.mark.parametrize(
    ("version", "released", "policy", "moving", "held"),
    [
        ("1.2.3", [], "release", ["latest", "1.2", "1"], []),
        ("1.2.3", ["v1.2.2", "v1.1.0"], "release", ["latest", "1.2", "1"], []),
        ("1.2.3", ["v1.3.0"], "release", ["1.2"], ["latest", "1"]),
        ("1.2.3", ["v2.0.0"], "release", ["1.2", "1"], ["latest"]),
        ("1.2.3", ["v1.3.0"], "branch", ["1.2"], ["1"]),
        ("1.2.3", ["v1.2.4"], "branch", [], ["1.2", "1"]),
        ("1.2.3", ["v2.0.0-rc.1", "latest"], "release", ["latest", "1.2", "1"], []),
        ("1.2.3", ["v1.2.3", "1.2.3"], "release", ["latest", "1.2", "1"], []),
    ],
)
def test_a_release_takes_only_the_moving_tags_no_newer_release_owns(
    version: str, released: list[str], policy: str, moving: list[str], held: list[str]
) -> None:
    tags, holds = moving_tags(release(version), policy, released)
    assert tags == moving
    assert [t for t, _ in holds] == held


@pytest.mark.parametrize(
    ("record", "tag"),
    [
        (branch(), "main-abc1234"),
        (release(), "v1.2.3"),
        (
            BuildRecord("i", "pr-42-abc1234", ["pr-42"], PLATFORMS),
            "pr-42-abc1234",
        ),
    ],
)
def test_the_index_is_uploaded_under_a_tag_that_names_this_build_only(
    record: BuildRecord, tag: str
) -> None:
    assert staging_tag(record) == tag


@pytest.mark.parametrize(
    ("stderr", "transient"),
    [
        ("read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", True),
        ('failed to do request: Head "http://x/v2/": EOF', True),
        ("unexpected status from HEAD request to http://x: 503 Service Unavailable", True),
        ("toomanyrequests: 429 Too Many Requests", True),
        ("net/http: TLS handshake timeout", True),
        ("dial tcp 127.0.0.1:5999: connect: connection refused", True),
        ("unauthorized: authentication required", False),
        ("denied: requested access to the resource is denied", False),
        ("An image does not exist locally with the tag: x", False),
        ("name unknown: repository name not known to registry", False),
        ("something else entirely", False),
    ],
)
def test_docker_errors_are_classified_transient_or_not(stderr: str, transient: bool) -> None:
    assert is_transient(stderr) is transient


def test_login_sends_the_password_on_stdin_only_and_retries_transient_failures() -> None:
    calls: list[tuple[list[str], str | None]] = []

    def docker(argv: Sequence[str], stdin: str | None) -> None:
        calls.append((list(argv), stdin))
        if len(calls) == 1:
            raise TransientRegistryError("docker login failed", stderr="EOF")

    assert login("ghcr.io", Credentials("octo", "s3cret"), docker=docker, retry=FAST) is True
    assert calls[-1] == (["login", "ghcr.io", "--username", "octo", "--password-stdin"], "s3cret")
    assert len(calls) == 2
    assert all("s3cret" not in " ".join(argv) for argv, _ in calls)


def test_no_credentials_means_no_login() -> None:
    def docker(argv: Sequence[str], stdin: str | None) -> None:
        raise AssertionError("docker login must not run")

    assert login("127.0.0.1:5000", None, docker=docker, retry=FAST) is False


def test_the_record_gets_the_digest_and_pushed() -> None:
    from pipeline.release.push import PushResult

    record = update_record(branch(), PushResult("i", A, PLATFORMS, ["latest"], attestations=2))
    assert record.digest == A and record.pushed is True
    assert record.extra["push"]["attestations"] == 2


# --- against the real registry ---


@pytest.fixture
def images() -> object:
    made: list[str] = []
    yield made
    remove_images(*made)


def built(record: BuildRecord, tmp_path: Path, made: list[str], **kw: object) -> str:
    refs = record.full_tags
    made.extend(refs)
    return build_image(refs[0], tmp_path, extra_tags=refs[1:], **kw)  # type: ignore[arg-type]


def tags_of(client: RegistryClient, repo: str) -> dict[str, str | None]:
    return {t: client.digest(repo, t) for t in sorted(client.tags(repo))}


@pytest.mark.engine
def test_a_branch_build_is_pushed_as_one_index_with_every_tag(
    registry: str, scratch_repo: str, tmp_path: Path, images: list[str]
) -> None:
    record = branch(scratch_repo)
    local = built(record, tmp_path, images)
    client = RegistryClient(registry, retry=FAST)
    result = push(record, client, log=lambda _: None)
    repo = parse_reference(scratch_repo).repository
    assert result.digest == local
    assert result.platforms == PLATFORMS
    assert result.attestations == 2
    assert result.tags == ["main-abc1234", "latest"]
    assert result.written == ["latest"]  # main-abc1234 came with the upload itself
    assert tags_of(client, repo) == {"latest": local, "main-abc1234": local}


@pytest.mark.engine
def test_a_release_rerun_is_a_no_op_and_another_build_cannot_take_its_tag(
    registry: str, scratch_repo: str, tmp_path: Path, images: list[str]
) -> None:
    record = release(image=scratch_repo)
    local = built(record, tmp_path, images)
    client = RegistryClient(registry, retry=FAST)
    repo = parse_reference(scratch_repo).repository
    first = push(record, client, log=lambda _: None)
    assert first.written == ["1.2.3", "1.2", "1"]  # v1.2.3 came with the upload
    again = push(record, client, log=lambda _: None)
    assert again.unchanged == ["v1.2.3", "1.2.3"]
    assert again.written == []  # the moving tags already point at it
    before = tags_of(client, repo)
    assert set(before.values()) == {local}
    remove_images(*record.full_tags)
    other = built(record, tmp_path, images)
    assert other != local
    with pytest.raises(TagConflictError, match=r"v1\.2\.3 already exists at sha256:"):
        push(record, client, log=lambda _: None)
    assert tags_of(client, repo) == before


@pytest.mark.engine
def test_a_rebuild_of_a_released_image_keeps_the_released_index_and_uploads_nothing(
    registry: str, scratch_repo: str, tmp_path: Path, images: list[str]
) -> None:
    record = release(image=scratch_repo)
    payload = os.urandom(4096)
    first_local = built(record, tmp_path, images, content=payload, source_date_epoch=1700000000)
    client = RegistryClient(registry, retry=FAST)
    repo = parse_reference(scratch_repo).repository
    first = push(record, client, log=lambda _: None)
    before = tags_of(client, repo)
    remove_images(*record.full_tags)
    again_local = built(record, tmp_path, images, content=payload, source_date_epoch=1700000000)
    assert again_local != first_local, "each build's provenance makes a new index"
    uploads: list[str] = []

    def layout(reference: str) -> dict[str, bytes]:
        uploads.append(reference)
        return {}

    log: list[str] = []
    again = push(record, client, layout=layout, log=log.append)
    assert again.digest == first.digest == first_local
    assert again.unchanged == ["v1.2.3", "1.2.3"]
    assert again.attestations == 2
    assert uploads == []
    assert (
        f"{scratch_repo}:v1.2.3 already holds this image ({first_local}: the same platform "
        "manifests, only the build's provenance differs): nothing to upload"
    ) in log
    assert tags_of(client, repo) == before


@pytest.mark.engine
def test_an_index_missing_a_platform_moves_no_tag(
    registry: str, scratch_repo: str, tmp_path: Path, images: list[str]
) -> None:
    record = branch(scratch_repo)
    built(record, tmp_path, images, platforms=["linux/amd64"])
    client = RegistryClient(registry, retry=FAST)
    with pytest.raises(RegistryError, match="lacks platform\\(s\\) linux/arm64"):
        push(record, client, log=lambda _: None)
    repo = parse_reference(scratch_repo).repository
    assert client.digest(repo, "latest") is None


@pytest.mark.engine
@pytest.mark.parametrize(
    ("mode", "count", "reason"),
    [
        ("reset", 3, "[Errno 104] Connection reset by peer"),
        ("status", 3, "the registry answered HTTP 503 Service Unavailable (injected fault)"),
    ],
)
def test_each_upload_request_is_retried_on_its_own_through_transient_faults(
    tmp_path: Path, images: list[str], mode: str, count: int, reason: str
) -> None:
    """The faults hit the upload's writes only (reads pass): the first write, the first
    blob's upload start, fails ``count`` times in a row and is retried on its own, request
    by request; nothing is pushed again from the start."""
    name = f"test/{os.urandom(6).hex()}"
    retried: list[str] = []
    with FaultProxy() as proxy:
        proxy.configure(mode, count, 503, match=r"^(POST|PUT) /v2/")
        record = branch(f"{proxy.address}/{name}")
        local = built(record, tmp_path, images)
        client = RegistryClient(
            proxy.address, retry=FAST, on_retry=lambda n, e: retried.append(str(e))
        )
        log: list[str] = []
        result = push(record, client, log=log.append)
        assert proxy.faults == count
    assert len(retried) == count and len(set(retried)) == 1
    assert retried[0].startswith("start the upload of sha256:")
    assert retried[0].endswith(f"to {proxy.address}/{name}: {reason}")
    assert log[0] == f"pushing {record.image}:main-abc1234 (every platform, one index)"
    assert log[1].startswith(f"pushed {proxy.address}/{name}@{local} by digest (")
    assert log[2] == f"tagged {proxy.address}/{name}:main-abc1234 -> {local}"
    assert result.digest == local
    direct = RegistryClient("127.0.0.1:5000", retry=FAST)
    assert tags_of(direct, name) == {"latest": local, "main-abc1234": local}


@pytest.mark.engine
@pytest.mark.parametrize(("mode", "count", "status"), [("reset", 3, 503), ("status", 3, 429)])
def test_a_push_succeeds_when_every_call_goes_through_transient_faults(
    tmp_path: Path, images: list[str], mode: str, count: int, status: int
) -> None:
    name = f"test/{os.urandom(6).hex()}"
    retried: list[str] = []
    with FaultProxy(mode=mode, count=count, status=status) as proxy:
        record = branch(f"{proxy.address}/{name}")
        local = built(record, tmp_path, images)
        client = RegistryClient(
            proxy.address, retry=FAST, on_retry=lambda n, exc: retried.append(str(exc))
        )
        result = push(record, client, log=lambda _: None)
        assert proxy.faults == count
    assert retried
    assert result.digest == local
    direct = RegistryClient("127.0.0.1:5000", retry=FAST)
    assert tags_of(direct, name) == {"latest": local, "main-abc1234": local}


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "REGISTRY_RETRY_ATTEMPTS": "3",
            "REGISTRY_RETRY_SECONDS": "10",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.engine
def test_past_the_retry_budget_the_push_fails_in_one_line_and_latest_stays(
    tmp_path: Path, images: list[str]
) -> None:
    name = f"test/{os.urandom(6).hex()}"
    direct = RegistryClient("127.0.0.1:5000", retry=FAST)
    with FaultProxy() as proxy:
        old = branch(f"{proxy.address}/{name}", sha="0000000")
        old_digest = built(old, tmp_path, images)
        push(old, direct_via(proxy), log=lambda _: None)
        record = branch(f"{proxy.address}/{name}")
        built(record, tmp_path, images)
        path = tmp_path / "image.toml"
        record.write(path)
        proxy.configure("status", -1, 503)
        done = invoke("docker.push", "--record", str(path))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [done.stderr.splitlines()[-1]]
    assert errors[0] == (
        f"error: read {proxy.address}/{name}:main-abc1234: the registry answered "
        "HTTP 503 Service Unavailable (gave up after 3 attempts)"
    )
    assert done.stdout == ""
    assert direct.digest(name, "latest") == old_digest
    assert direct.digest(name, "main-abc1234") is None
    assert BuildRecord.read(path).pushed is False


def direct_via(proxy: FaultProxy) -> RegistryClient:
    return RegistryClient(proxy.address, retry=FAST)


@pytest.mark.engine
@pytest.mark.parametrize(
    ("mode", "every"),
    [("flaky", 4), ("flaky_status", 5)],
    ids=["every-4th-request-reset", "every-5th-request-503-retry-after-0"],
)
def test_a_push_gets_through_a_registry_that_fails_a_fixed_fraction_of_requests_forever(
    tmp_path: Path, images: list[str], mode: str, every: int
) -> None:
    """Faults that never stop: every 4th request reset, or every 5th answered 503 with
    ``Retry-After: 0``. A whole-push retry (``docker push``: ~13 connections an attempt, a
    reset request not retried) never gets through; per-request retries always do."""
    name = f"test/{os.urandom(6).hex()}"
    with FaultProxy(mode=mode, count=every, status=503, limit=-1) as proxy:
        proxy.retry_after = "0"
        record = release(image=f"{proxy.address}/{name}")
        local = built(record, tmp_path, images)
        path = tmp_path / "image.toml"
        record.write(path)
        done = invoke("docker.push", "--record", str(path))
        faults = proxy.faults
    assert done.returncode == 0, done.stderr
    assert faults > 0
    assert f"digest={local}" in done.stdout.splitlines()
    direct = RegistryClient("127.0.0.1:5000", retry=FAST)
    assert tags_of(direct, name) == {t: local for t in record.tags}
    assert direct.manifest(name, local).platforms() == PLATFORMS
    pushed = BuildRecord.read(path)
    assert pushed.pushed is True and pushed.digest == local


@pytest.mark.engine
def test_a_push_killed_half_way_then_run_again_leaves_exactly_one_correct_index(
    tmp_path: Path, images: list[str]
) -> None:
    name = f"test/{os.urandom(6).hex()}"
    with FaultProxy(mode="stall_after_bytes", count=300_000) as proxy:
        record = branch(f"{proxy.address}/{name}")
        local = built(record, tmp_path, images, size=2_000_000)
        path = tmp_path / "image.toml"
        record.write(path)
        process = push_half_way(proxy, path, ROOT, past=300_000)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        direct = RegistryClient("127.0.0.1:5000", retry=FAST)
        assert direct.digest(name, "latest") is None
        proxy.configure("pass")
        done = invoke("docker.push", "--record", str(path))
    assert done.returncode == 0, done.stderr
    assert f"digest={local}" in done.stdout.splitlines()
    assert tags_of(direct, name) == {"latest": local, "main-abc1234": local}
    index = direct.manifest(name, local)
    assert index.platforms() == PLATFORMS
    pushed = BuildRecord.read(path)
    assert pushed.pushed is True and pushed.digest == local


@pytest.mark.engine
def test_an_image_missing_from_the_local_store_is_one_line(
    scratch_repo: str, tmp_path: Path
) -> None:
    path = tmp_path / "image.toml"
    branch(scratch_repo).write(path)
    done = invoke("docker.push", "--record", str(path))
    assert done.returncode == 1
    assert done.stderr == (
        f"error: image {scratch_repo}:latest is not in the local store: "
        "run `invoke docker.build` first\n"
    )


@pytest.mark.engine
def test_a_registry_that_is_down_is_one_line(tmp_path: Path, images: list[str]) -> None:
    with FaultProxy() as proxy:
        address = proxy.address
    record = branch(f"{address}/test/{os.urandom(6).hex()}")
    built(record, tmp_path, images)
    path = tmp_path / "image.toml"
    record.write(path)
    done = invoke("docker.push", "--record", str(path))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [done.stderr.splitlines()[-1]]
    assert errors[0].endswith(
        f"connection refused: is the registry at {address} up? (gave up after 3 attempts)"
    )


@pytest.mark.engine
def test_wrong_credentials_fail_the_push_in_one_line_without_leaking_the_password(
    tmp_path: Path, images: list[str]
) -> None:
    with FaultProxy(mode="status", count=-1, status=401) as proxy:
        record = branch(f"{proxy.address}/test/{os.urandom(6).hex()}")
        built(record, tmp_path, images)
        path = tmp_path / "image.toml"
        record.write(path)
        secret = "n0t-the-Password-42"
        done = invoke(
            "docker.push",
            "--record",
            str(path),
            env={"REGISTRY_USERNAME": "bot", "REGISTRY_PASSWORD": secret},
        )
        faults = proxy.faults
    assert done.returncode == 1
    assert done.stderr == (
        f"error: read {record.image}:main-abc1234: unauthorized (HTTP 401): "
        "check REGISTRY_USERNAME/REGISTRY_PASSWORD (or GITHUB_TOKEN for ghcr.io)\n"
    )
    assert secret not in done.stderr + done.stdout
    assert faults == 1  # not retried, and no docker login: nothing here runs cosign


def test_a_transient_error_type_is_a_registry_error() -> None:
    assert issubclass(TransientRegistryError, RegistryError)


@pytest.mark.engine
def test_a_push_and_its_signature_get_through_a_flaky_registry(
    tmp_path: Path, images: list[str]
) -> None:
    from faultproxy import cosign_keys

    from pipeline.release.sign import config_from_env, sign, verify

    policy = RetryPolicy(attempts=6, max_seconds=60, initial=0.05, max_wait=0.3, jitter=0.05)
    signing = config_from_env({**os.environ, **cosign_keys(tmp_path / "keys")})
    name = f"test/{os.urandom(6).hex()}"
    # Every 8th connection is reset, 3 times: the upload's requests and cosign's get through.
    with FaultProxy(mode="flaky", count=8, limit=3) as proxy:
        record = branch(f"{proxy.address}/{name}")
        local = built(record, tmp_path, images)
        image = parse_reference(record.image)
        result = push(
            record,
            RegistryClient(proxy.address, retry=policy),
            before_moving=lambda digest: sign(image.with_digest(digest), signing, retry=policy),
            log=lambda _: None,
        )
        assert proxy.faults == 3
    direct = RegistryClient("127.0.0.1:5000", retry=FAST)
    assert result.digest == local
    assert tags_of(direct, name) == {
        "latest": local,
        "main-abc1234": local,
        f"sha256-{local[7:]}.sig": direct.digest(name, f"sha256-{local[7:]}.sig"),
    }
    assert verify(parse_reference(f"127.0.0.1:5000/{name}").with_digest(local), signing)


@pytest.mark.engine
def test_the_push_task_pushes_one_index_with_its_own_credentials_to_registry_2_and_to_ghcr(
    remote: Remote, tmp_path: Path, images: list[str]
) -> None:
    """Through the ghcr.io model the task's own credentials (REGISTRY_USERNAME/PASSWORD, for
    the registry client's token) are the only way in: a fresh DOCKER_CONFIG holds nothing."""
    record = branch(remote.ref)
    local = built(record, tmp_path, images)
    path = tmp_path / "image.toml"
    record.write(path)
    env = {**remote.env, "DOCKER_CONFIG": str(docker_config(tmp_path / "fresh"))}
    done = invoke("docker.push", "--record", str(path), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-3:] == [
        f"digest={local}",
        "platforms=linux/amd64,linux/arm64",
        "tags=main-abc1234,latest",
    ]
    client = remote.client(FAST)
    assert tags_of(client, remote.repository) == {"latest": local, "main-abc1234": local}
    if remote.model is not None:
        assert remote.model.token not in done.stdout + done.stderr
