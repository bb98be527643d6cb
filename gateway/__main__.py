"""Command line: ``python -m gateway --config FILE [--config FILE...] [--host H] [--port P]
[--workers N]``.

``--check`` only validates the config (exit 0, or 2 with the error).
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import ConfigError, load


def _port(value: str) -> int:
    n = int(value)
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError(f"must be 1-65535, got {n}")
    return n


def _workers(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: one per CPU), got {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="Run the API gateway.")
    parser.add_argument(
        "--config",
        action="append",
        help="TOML config file; repeat to merge several in order (tables merge key by key, "
        "later values replace earlier ones), e.g. the config then a file of API key hashes",
    )
    parser.add_argument("--host", help="listen address (overrides server.host)")
    parser.add_argument("--port", type=_port, help="listen port (overrides server.port)")
    parser.add_argument("--admin-port", type=_port, help="admin port (overrides admin.port)")
    parser.add_argument(
        "--workers", type=_workers, help="worker processes (overrides server.workers)"
    )
    parser.add_argument("--check", action="store_true", help="validate the config and exit 0 or 2")
    args = parser.parse_args(argv)
    if not args.config and os.environ.get("GATEWAY_CONFIG"):
        args.config = [os.environ["GATEWAY_CONFIG"]]
    if not args.config:
        print("gateway: config error: no config file given (use --config FILE)", file=sys.stderr)
        return 2
    try:
        config = load(args.config)
    except ConfigError as e:
        print(f"gateway: config error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug in validation must still be one line, not a traceback
        where = ", ".join(args.config)
        print(f"gateway: config error: {where}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"gateway: config OK: {', '.join(args.config)} ({len(config.routes)} routes)")
        return 0
    from .server import Overrides, run

    overrides = Overrides(args.host, args.port, args.workers, args.admin_port)
    try:
        return run(args.config, overrides.apply(config), overrides)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
