"""``python aiohttp_proxy.py PORT UPSTREAM_PORT``: an aiohttp server forwarding through one aiohttp
ClientSession."""

import sys

import aiohttp
from aiohttp import web

UPSTREAM = f"http://127.0.0.1:{sys.argv[2]}"
HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "trailer",
    "host",
    "content-length",
    "proxy-connection",
}


async def on_startup(app: web.Application) -> None:
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def on_cleanup(app: web.Application) -> None:
    await app["session"].close()


async def proxy(request: web.Request) -> web.Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    body = await request.read()
    async with request.app["session"].request(
        request.method, UPSTREAM + request.path_qs, headers=headers, data=body or None
    ) as up:
        data = await up.read()
        rheaders = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
        return web.Response(status=up.status, headers=rheaders, body=data)


app = web.Application()
app.on_startup.append(on_startup)
app.on_cleanup.append(on_cleanup)
app.router.add_route("*", "/{tail:.*}", proxy)
try:
    import uvloop

    uvloop.install()
except ImportError:
    pass
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
