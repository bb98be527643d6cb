"""``granian --interface asgi granian_proxy:app``, from this directory with
``BENCH_UPSTREAM_PORT`` set: an ASGI app forwarding through one aiohttp ClientSession."""

import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

UPSTREAM = "http://127.0.0.1:" + os.environ["BENCH_UPSTREAM_PORT"]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"upgrade",
    b"trailer",
    b"host",
    b"content-length",
    b"proxy-connection",
}
session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    global session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.lower() not in HOP]
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    url = (
        UPSTREAM
        + scope["raw_path"].decode()
        + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
    )
    async with session.request(scope["method"], url, headers=headers, data=body or None) as up:
        data = await up.read()
        out = [
            (k.encode(), v.encode()) for k, v in up.headers.items() if k.lower().encode() not in HOP
        ]
        await send({"type": "http.response.start", "status": up.status, "headers": out})
        await send({"type": "http.response.body", "body": data})
