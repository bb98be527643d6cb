"""ghcr.io's deletion path (the GitHub Packages API), pure and against a fake sender; the
ghcr.io model itself (tests/ghcr_model.py) against its documented behaviour."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from faultproxy import push_image
from fixtures_ghcr import docker_config, docker_login
from ghcr_model import GhcrModel

from pipeline.errors import ConfigError, RegistryError, UsageError
from pipeline.registry.client import (
    AuthError,
    Credentials,
    NotFoundError,
    RegistryClient,
    RetryPolicy,
)
from pipeline.registry.ghcr import (
    GITHUB_API,
    PackagesClient,
    Version,
    api_base,
    deleter_for,
    next_link,
    packages_deleter,
    parse_versions,
    registry_api,
    split_package,
    versions_path,
)

FAST = RetryPolicy(attempts=3, max_seconds=5, initial=0.01, max_wait=0.02, jitter=0.0)
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("host", "setting", "api"),
    [
        ("ghcr.io", "", "ghcr"),
        ("ghcr.io", "auto", "ghcr"),
        ("127.0.0.1:5000", "", "registry"),
        ("registry.example.com", "", "registry"),
        ("127.0.0.1:41234", "ghcr", "ghcr"),
        ("ghcr.io", "registry", "registry"),
        ("ghcr.io", " GHCR ", "ghcr"),
    ],
)
def test_the_deletion_path_follows_the_host_unless_the_setting_names_one(
    host: str, setting: str, api: str
) -> None:
    assert registry_api(host, setting) == api


def test_an_unknown_registry_api_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="registry_api: 'quay' is not one of auto, ghcr"):
        registry_api("ghcr.io", "quay")


@pytest.mark.parametrize(
    ("extra", "environ", "base"),
    [
        ({}, {}, GITHUB_API),
        ({"github_api_url": "http://127.0.0.1:9/"}, {}, "http://127.0.0.1:9"),
        (
            {"github_api_url": "http://a"},
            {"GITHUB_API_URL": "https://ghe.example/api/v3"},
            "https://ghe.example/api/v3",
        ),
    ],
)
def test_the_api_base_is_github_api_url_then_the_setting_then_github_com(
    extra: dict[str, str], environ: dict[str, str], base: str
) -> None:
    assert api_base(extra, environ) == base


def test_a_malformed_api_base_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected http"):
        api_base({}, {"GITHUB_API_URL": "api.github.com"})


@pytest.mark.parametrize(
    ("repository", "owner", "package", "path"),
    [
        ("acme/api-gateway", "acme", "api-gateway", "/orgs/acme/packages/container/api-gateway"),
        ("acme/a/b", "acme", "a/b", "/orgs/acme/packages/container/a%2Fb"),
    ],
)
def test_the_package_is_the_image_name_after_its_owner_url_encoded(
    repository: str, owner: str, package: str, path: str
) -> None:
    assert split_package(repository) == (owner, package)
    assert versions_path("orgs", owner, package) == f"{path}/versions"
    assert versions_path("users", owner, package, 7) == (
        f"{path.replace('/orgs/', '/users/')}/versions/7"
    )


def test_an_image_without_an_owner_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="OWNER/PACKAGE"):
        split_package("api-gateway")


def test_versions_are_read_with_their_digest_and_tags() -> None:
    page = [
        {
            "id": 5,
            "name": D1,
            "metadata": {"package_type": "container", "container": {"tags": ["latest", "1.0.0"]}},
        },
        {"id": 4, "name": D2, "metadata": {"package_type": "container", "container": {"tags": []}}},
    ]
    assert parse_versions(page) == [Version(5, D1, ("latest", "1.0.0")), Version(4, D2, ())]
    with pytest.raises(RegistryError, match="no list of versions"):
        parse_versions({"message": "Not Found"})


@pytest.mark.parametrize(
    ("header", "url"),
    [
        (
            '<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; '
            'rel="last"',
            "https://api.github.com/x?page=2",
        ),
        ('<https://api.github.com/x?page=1>; rel="prev"', None),
        ("", None),
    ],
)
def test_the_next_page_comes_from_the_link_header(header: str, url: str | None) -> None:
    assert next_link(header) == url


class FakeApi:
    """GitHub's answers by (method, url), in order; what was asked."""

    def __init__(self, answers: Mapping[tuple[str, str], list[tuple[int, Any, dict[str, str]]]]):
        self.answers = {k: list(v) for k, v in answers.items()}
        self.calls: list[tuple[str, str, str]] = []

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        self.calls.append((method, url, headers["Authorization"]))
        status, body, extra = self.answers[(method, url)].pop(0)
        return status, extra, json.dumps(body).encode() if body is not None else b""


API = "https://api.github.com"
ORG = f"{API}/orgs/acme/packages/container/api-gateway/versions"
USER = f"{API}/users/acme/packages/container/api-gateway/versions"
NOT_FOUND = (404, {"message": "Not Found", "documentation_url": "https://docs.github.com"}, {})


def version(ident: int, digest: str, *tags: str) -> dict[str, Any]:
    return {
        "id": ident,
        "name": digest,
        "metadata": {"package_type": "container", "container": {"tags": list(tags)}},
    }


def test_a_user_owned_package_is_found_after_the_organisation_path_answers_404() -> None:
    fake = FakeApi(
        {
            ("GET", f"{ORG}?per_page=100"): [NOT_FOUND],
            ("GET", f"{USER}?per_page=100"): [
                (
                    200,
                    [version(9, D1, "main-1")],
                    {"Link": f'<{USER}?per_page=100&page=2>; rel="next"'},
                )
            ]
            * 2,
            ("GET", f"{USER}?per_page=100&page=2"): [(200, [version(8, D2)], {})] * 2,
            ("DELETE", f"{USER}/8"): [(204, None, {})],
        }
    )
    packages = PackagesClient(API, "t0ken", "acme", "api-gateway", retry=FAST, send=fake)
    assert packages.versions() == [Version(9, D1, ("main-1",)), Version(8, D2, ())]
    packages_deleter(packages)(D2)
    assert [c[:2] for c in fake.calls] == [
        ("GET", f"{ORG}?per_page=100"),
        ("GET", f"{USER}?per_page=100"),
        ("GET", f"{USER}?per_page=100&page=2"),
        ("GET", f"{USER}?per_page=100"),
        ("GET", f"{USER}?per_page=100&page=2"),
        ("DELETE", f"{USER}/8"),
    ]
    assert {c[2] for c in fake.calls} == {"Bearer t0ken"}


def test_bad_credentials_are_an_auth_error_with_githubs_message() -> None:
    fake = FakeApi(
        {
            ("GET", f"{ORG}?per_page=100"): [
                (401, {"message": "Bad credentials", "documentation_url": "x"}, {})
            ]
        }
    )
    packages = PackagesClient(API, "bad", "acme", "api-gateway", retry=FAST, send=fake, kind="orgs")
    with pytest.raises(AuthError) as caught:
        packages.versions()
    assert caught.value.one_line() == (
        "list the versions of api-gateway: the GitHub API refused (HTTP 401: Bad credentials): "
        "GITHUB_TOKEN needs `packages: write` (delete) on this package"
    )


def test_a_missing_package_is_not_found_on_either_owner_path() -> None:
    fake = FakeApi(
        {("GET", f"{ORG}?per_page=100"): [NOT_FOUND], ("GET", f"{USER}?per_page=100"): [NOT_FOUND]}
    )
    packages = PackagesClient(API, "t", "acme", "api-gateway", retry=FAST, send=fake)
    with pytest.raises(NotFoundError, match="package api-gateway of acme not found"):
        packages.versions()


def test_a_5xx_from_the_api_is_retried() -> None:
    fake = FakeApi(
        {("DELETE", f"{ORG}/3"): [(502, {"message": "Server Error"}, {}), (204, None, {})]}
    )
    packages = PackagesClient(API, "t", "acme", "api-gateway", retry=FAST, send=fake, kind="orgs")
    packages.delete(3)
    assert len(fake.calls) == 2


def test_a_digest_that_is_no_version_is_not_deleted() -> None:
    fake = FakeApi({("GET", f"{ORG}?per_page=100"): [(200, [version(1, D1)], {})]})
    packages = PackagesClient(API, "t", "acme", "api-gateway", retry=FAST, send=fake, kind="orgs")
    with pytest.raises(NotFoundError, match=f"{D2} is no version of package api-gateway"):
        packages_deleter(packages)(D2)


@pytest.mark.parametrize(
    ("host", "extra", "api", "line"),
    [
        (
            "127.0.0.1:5000",
            {},
            "registry",
            "deleting through the registry API (127.0.0.1:5000/a/b)",
        ),
        ("ghcr.io", {}, "ghcr", "deleting through the GitHub Packages API (package b on ghcr.io)"),
        (
            "127.0.0.1:5000",
            {"registry_api": "ghcr"},
            "ghcr",
            "deleting through the GitHub Packages API (package b on 127.0.0.1:5000)",
        ),
    ],
)
def test_the_deletion_path_and_its_line_follow_the_host_or_the_setting(
    host: str, extra: dict[str, str], api: str, line: str
) -> None:
    how = deleter_for(RegistryClient(host), "a/b", extra=extra, environ={"GITHUB_TOKEN": "t"})
    assert (how.api, how.describe) == (api, line)


def test_ghcr_needs_github_token_to_delete_but_not_to_plan() -> None:
    client = RegistryClient("ghcr.io")
    environ = {"REGISTRY_USERNAME": "octocat"}
    with pytest.raises(UsageError, match="GITHUB_TOKEN is not set") as caught:
        deleter_for(client, "acme/api-gateway", extra={}, environ=environ)
    assert caught.value.exit_code == 2
    planning = deleter_for(client, "acme/api-gateway", extra={}, environ=environ, deleting=False)
    with pytest.raises(UsageError, match="GITHUB_TOKEN is not set"):
        planning.delete("sha256:" + "1" * 64)
    with_password = {"REGISTRY_USERNAME": "octocat", "REGISTRY_PASSWORD": "ghp_x"}
    assert deleter_for(client, "acme/gw", extra={}, environ=with_password).api == "ghcr"


# --- the model (engine: it fronts the real registry) ---


def _get(
    url: str, headers: Mapping[str, str] | None = None, method: str = "GET"
) -> tuple[int, Mapping[str, str], Any]:
    request = urllib.request.Request(url, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as fh:
            body = fh.read()
            return fh.status, fh.headers, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, exc.headers, json.loads(body) if body else None


@pytest.mark.engine
def test_the_model_challenges_anonymous_v2_calls_as_ghcr_does(ghcr: GhcrModel) -> None:
    status, headers, body = _get(f"http://{ghcr.host}/v2/test/x/tags/list")
    assert status == 401
    assert headers["WWW-Authenticate"] == (
        f'Bearer realm="http://{ghcr.host}/token",service="ghcr.io",scope="repository:test/x:pull"'
    )
    assert body == {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}


@pytest.mark.engine
def test_the_model_gives_a_token_for_the_github_token_only(ghcr: GhcrModel) -> None:
    url = f"http://{ghcr.host}/token?scope=repository:test/x:pull,push&service=ghcr.io"
    good = base64.b64encode(f"{ghcr.user}:{ghcr.token}".encode()).decode()
    bad = base64.b64encode(f"{ghcr.user}:nope".encode()).decode()
    status, _, body = _get(url, {"Authorization": f"Basic {good}"})
    assert status == 200 and set(body) == {"token"}
    assert _get(url, {"Authorization": f"Basic {bad}"})[0] == 401
    assert _get(url)[0] == 401
    status, _, _ = _get(f"http://{ghcr.host}/v2/", {"Authorization": f"Bearer {body['token']}"})
    assert status == 200


@pytest.mark.engine
def test_the_model_refuses_manifest_deletes_with_unsupported(ghcr: GhcrModel) -> None:
    client = RegistryClient(ghcr.host, retry=FAST, credentials=Credentials(ghcr.user, ghcr.token))
    with pytest.raises(RegistryError) as caught:
        client.delete_manifest("test/x", D1)
    assert "HTTP 405" in caught.value.one_line()
    assert "The operation is unsupported." in caught.value.one_line()
    assert ghcr.v2_deletes == 2  # challenged, then refused


@pytest.mark.engine
def test_the_model_answers_the_packages_api_with_githubs_error_shapes(ghcr: GhcrModel) -> None:
    base = f"{ghcr.api_url}/orgs/test/packages/container/nothing-here/versions"
    assert _get(base)[0:3:2] == (
        401,
        {
            "message": "Bad credentials",
            "documentation_url": "https://docs.github.com/rest/packages/packages",
        },
    )
    auth = {"Authorization": f"Bearer {ghcr.token}"}
    assert _get(base, auth)[2]["message"] == "Package not found."
    users = base.replace("/orgs/", "/users/")
    assert _get(users, auth)[0:3:2] == (
        404,
        {
            "message": "Not Found",
            "documentation_url": "https://docs.github.com/rest/packages/packages",
        },
    )


@pytest.mark.engine
def test_a_user_owned_package_is_listed_page_by_page_and_deleted_by_digest_through_the_model(
    ghcr: GhcrModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ghcr.owner_kind = "users"
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path)))
    docker_login(ghcr, dict(os.environ))
    package = f"nested/gw-{os.getpid()}"
    digest = push_image(f"{ghcr.host}/test/{package}:main-0000001", tmp_path)
    packages = PackagesClient(ghcr.api_url, ghcr.token, "test", package, retry=FAST, per_page=1)
    versions = packages.versions()
    assert packages.kind == "users"
    client = RegistryClient(ghcr.host, retry=FAST, credentials=Credentials(ghcr.user, ghcr.token))
    index = client.manifest(f"test/{package}", digest).json()
    children = {str(m["digest"]) for m in index["manifests"]}
    assert sorted(v.name for v in versions) == sorted({digest, *children})
    assert [v.tags for v in versions if v.name == digest] == [("main-0000001",)]
    assert any("/users/test/packages/container/nested%2Fgw-" in p for _, p in ghcr.requests)
    packages_deleter(packages)(digest)
    assert client.digest(f"test/{package}", "main-0000001") is None
    assert (ghcr.v2_deletes, len(ghcr.api_deletes)) == (0, 1)
