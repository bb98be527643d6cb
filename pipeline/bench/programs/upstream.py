"""The benchmark's upstream: ``python upstream.py PORT BODY`` answers every request on
127.0.0.1:PORT with 200 and BODY (pipelined requests too)."""

import asyncio
import sys
from typing import cast

import uvloop

BODY = sys.argv[2].encode()
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%b" % (
    len(BODY),
    BODY,
)


class P(asyncio.Protocol):
    def connection_made(self, t: asyncio.BaseTransport) -> None:
        self.t = cast(asyncio.Transport, t)  # uvloop's transport is not a subclass
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4 :]
            self.t.write(RESPONSE * n)


async def main() -> None:
    server = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()


uvloop.run(main())
