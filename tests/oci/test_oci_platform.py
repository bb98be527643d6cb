"""oci.platform: one vocabulary of platforms, parsed and validated once (pure)."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError, UsageError
from pipeline.oci.platform import (
    normalize_platform,
    parse_platforms,
    pick_platform,
    platform_key,
    platform_of,
)


@pytest.mark.parametrize(
    ("os_", "arch", "variant", "expected"),
    [
        ("linux", "x86_64", "", "linux/amd64"),
        ("Linux", "aarch64", "", "linux/arm64"),
        ("linux", "arm64", "v8", "linux/arm64"),
        ("linux", "arm", "v7", "linux/arm/v7"),
        ("linux", "s390x", "", "linux/s390x"),
    ],
)
def test_a_daemon_platform_is_said_in_the_one_vocabulary(
    os_: str, arch: str, variant: str, expected: str
) -> None:
    assert normalize_platform(os_, arch, variant) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("linux/amd64,linux/arm64", ("linux/amd64", "linux/arm64")),
        (["linux/amd64", " linux/arm64 ", "linux/amd64"], ("linux/amd64", "linux/arm64")),
        (["linux/amd64,linux/arm/v7"], ("linux/amd64", "linux/arm/v7")),
        ("", ()),
        ([], ()),
    ],
)
def test_platforms_are_parsed_from_commas_or_lists_deduplicated_in_order(
    value: str | list[str], expected: tuple[str, ...]
) -> None:
    assert parse_platforms(value, what="--platform") == expected


@pytest.mark.parametrize("bad", ["amd64", "linux/", "/amd64", "linux/arm/v7/x"])
def test_a_platform_that_is_not_os_arch_is_an_error_naming_its_source(bad: str) -> None:
    with pytest.raises(UsageError, match=f"--platform: '{bad}' is not OS/ARCH"):
        parse_platforms(bad, what="--platform")
    with pytest.raises(ConfigError, match=r"\[tool.pipeline\] platforms"):
        parse_platforms([bad], what="[tool.pipeline] platforms", error=ConfigError)


def test_arm64_and_arm64_v8_are_one_platform() -> None:
    assert platform_key("linux/arm64/v8") == platform_key("linux/arm64") == "linux/arm64"
    assert platform_key("linux/arm/v7") == "linux/arm/v7"


def test_a_descriptor_or_config_names_its_platform() -> None:
    assert platform_of({"os": "linux", "architecture": "arm64", "variant": "v8"}) == (
        "linux/arm64/v8"
    )
    assert platform_of({"os": "linux"}) == ""


@pytest.mark.parametrize(
    ("platforms", "host", "expected"),
    [
        (["linux/amd64", "linux/arm64"], "linux/arm64", "linux/arm64"),
        (["linux/arm64"], "linux/amd64", "linux/arm64"),
        ([], "linux/amd64", "linux/amd64"),
    ],
)
def test_the_scan_takes_the_hosts_platform_when_the_image_has_it(
    platforms: list[str], host: str, expected: str
) -> None:
    assert pick_platform(platforms, host) == expected
