#!/usr/bin/env python3
"""Relays 127.0.0.1:LISTEN to 127.0.0.1:TARGET, byte for byte.

Why: the official Rust GCS client sends a Host header without the port of a custom
endpoint (`Host: 127.0.0.1` for http://127.0.0.1:4443), and fake-gcs-server builds a
resumable upload's session URL from that header, so the session URL points at port 80.
Every resumable upload (a streamed put, or any object above the resumable threshold)
then goes to 127.0.0.1:80. This relay answers there for fake-gcs-server. Real GCS is
unaffected: its endpoint has the default port.

    upload-relay.py LISTEN_PORT TARGET_PORT
"""

import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def main(listen, target):
    async def serve(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    server = await asyncio.start_server(serve, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
