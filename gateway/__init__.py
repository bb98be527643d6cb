"""A fast asyncio API gateway: declarative routes, health-aware upstream pools, auth,
rate limits, metrics and graceful lifecycle.  Run with ``python -m gateway --config FILE``."""

from __future__ import annotations

__version__ = "0.1.0"
