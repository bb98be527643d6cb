"""``python asyncio_proxy.py PORT UPSTREAM_PORT``: a featureless stdlib-asyncio forwarder,
the floor on the cost of proxying in Python (no X-Forwarded-*, request id, chunked bodies,
auth, metrics)."""

import asyncio
import sys

import uvloop

UP_HOST, UP_PORT = "127.0.0.1", int(sys.argv[2])
HOP = {
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"upgrade",
    b"trailer",
    b"proxy-connection",
    b"proxy-authorization",
    b"proxy-authenticate",
}


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, list[bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    kept = []
    for line in lines[1:-2]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        if lname not in HOP and lname != b"content-length":
            kept.append(line)
    body = await reader.readexactly(length) if length else b""
    return lines[0], kept, body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    up_reader: asyncio.StreamReader | None = None
    up_writer: asyncio.StreamWriter | None = None
    try:
        while True:
            try:
                first, headers, body = await read_message(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if up_writer is None:
                up_reader, up_writer = await asyncio.open_connection(UP_HOST, UP_PORT)
            up_writer.write(
                b"\r\n".join([first, *headers, b"Content-Length: %d" % len(body)])
                + b"\r\n\r\n"
                + body
            )
            assert up_reader is not None
            status, rheaders, rbody = await read_message(up_reader)
            writer.write(
                b"\r\n".join([status, *rheaders, b"Content-Length: %d" % len(rbody)])
                + b"\r\n\r\n"
                + rbody
            )
            await writer.drain()
    finally:
        writer.close()
        if up_writer is not None:
            up_writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await server.serve_forever()


uvloop.run(main())
