"""Fixtures for the gateway tests (helpers live in gateway_harness.py)."""

from __future__ import annotations

from gateway_harness import gateway_factory, upstream, upstream_factory

__all__ = ["gateway_factory", "upstream", "upstream_factory"]
