"""The docker CLI's name and argv: the one place in ``pipeline/`` that spells it."""

from __future__ import annotations

DOCKER = "docker"
