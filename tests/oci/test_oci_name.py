"""oci.name: image names from flags and settings, checked against the distribution grammar."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError, UsageError
from pipeline.oci.name import parse_image_name


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("ghcr.io/acme/api-gateway", "ghcr.io/acme/api-gateway"),
        ("ghcr.io/MyOrg/App", "ghcr.io/myorg/app"),
        ("127.0.0.1:5000/test/a__b.c-d", "127.0.0.1:5000/test/a__b.c-d"),
        ("localhost/x", "localhost/x"),
        (" registry.example.com:443/team/svc ", "registry.example.com:443/team/svc"),
    ],
)
def test_a_valid_image_name_is_kept_lowercased(text: str, name: str) -> None:
    assert parse_image_name(text, what="--image") == name


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a b", "--image 'a b': an image name has no spaces"),
        (
            "http://ghcr.io/acme/app",
            "--image 'http://ghcr.io/acme/app': an image name has no scheme",
        ),
        (
            "ghcr.io/acme/app:v1",
            "--image 'ghcr.io/acme/app:v1': a tag does not belong in the image name "
            "(tags come from --ref)",
        ),
        (
            "ghcr.io/acme/app@sha256:" + "a" * 64,
            f"--image 'ghcr.io/acme/app@sha256:{'a' * 64}': a digest does not belong in the "
            "image name",
        ),
        ("app", "--image 'app': no registry host"),
        ("ghcr.io/acme/-app", "--image 'ghcr.io/acme/-app': 'acme/-app' is not a repository"),
        ("ghcr.io/acme//app", "--image 'ghcr.io/acme//app': 'acme//app' is not a repository"),
        ("gh_cr.io/acme/app", "--image 'gh_cr.io/acme/app': 'gh_cr.io' is not a registry host"),
        ("", "--image is empty"),
    ],
)
def test_a_bad_image_name_is_a_usage_error_naming_the_rule(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_image_name(text, what="--image")
    assert caught.value.one_line().startswith(problem)
    assert caught.value.exit_code == 2


def test_a_bad_configured_image_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[tool.pipeline\] image 'a b'"):
        parse_image_name("a b", what="[tool.pipeline] image", error=ConfigError)
