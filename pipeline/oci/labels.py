"""What an image is called: its tags, version and ``org.opencontainers.image.*`` labels.

The policy that computes them is ``pipeline.release.tags``; everything that builds, checks or
pushes an image only reads them, from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

LABEL = "org.opencontainers.image."


class ImageTags(NamedTuple):
    """What one build is called: the version, its tags (names only), labels, and whether it
    takes ``latest``. ``immutable`` are the release-version tags that must never move;
    ``unique`` name one commit (``main-abc1234``) and are written with them, before the rest."""

    image: str
    version: str
    tag_names: tuple[str, ...]
    labels: Mapping[str, str] = MappingProxyType({})
    latest: bool = False
    immutable: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(f"{self.image}:{name}" for name in self.tag_names)

    @property
    def moving(self) -> tuple[str, ...]:
        """Tags that follow a line of builds (``latest``, ``1.2``, ``develop``, ``pr-42``...):
        written last, after every platform and every fixed tag is in place."""
        fixed = {*self.immutable, *self.unique}
        return tuple(t for t in self.tag_names if t not in fixed)

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "tags": list(self.tags),
            "tag_names": list(self.tag_names),
            "labels": dict(self.labels),
            "latest": self.latest,
        }
