"""A tiny sample upstream for the local environment: answers every request with a JSON echo of
what it received (method, path, the headers the gateway added), and /healthz with 200."""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = os.environ.get("UPSTREAM_NAME", "upstream")


class Echo(BaseHTTPRequestHandler):
    server_version = "sample-upstream"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/healthz":
            payload = {"status": "ok"}
        else:
            payload = {
                "service": NAME,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_bytes": len(body),
            }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        if self.path == "/healthz":
            return
        sys.stdout.write(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")
        sys.stdout.flush()


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Echo)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{NAME} listening on :{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
