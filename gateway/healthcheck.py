"""Container HEALTHCHECK probe, stdlib only: ``python -m gateway.healthcheck [--port N]``.

GETs http://127.0.0.1:PORT/healthz on the admin listener and exits 0 when it answers
200, else 1.  PORT: ``--port``, else ``$GATEWAY_ADMIN_PORT``, else 9901.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

DEFAULT_ADMIN_PORT = 9901


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway.healthcheck")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GATEWAY_ADMIN_PORT") or "9901")
    )
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    url = f"http://{args.host}:{args.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: {url}: status {response.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
