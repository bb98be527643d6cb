"""A fast asyncio API gateway: declarative routes, health-aware upstream pools, auth,
rate limits, metrics and graceful lifecycle.  Run with ``python -m gateway --config FILE``.

Modules: ``client`` (connections, parsing, limits), ``proxy`` (routing and policies),
``forward`` (the upstream exchange), ``websocket`` (tunnels), ``admin`` (health and
metrics listener), ``httpbits`` (pure HTTP helpers), ``config*`` (validation),
``server`` (workers, signals, supervisor)."""

from __future__ import annotations

__version__ = "0.1.0"
