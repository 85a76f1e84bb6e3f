#!/usr/bin/env python3
"""
The aiohttp reference server of C{http_bench.py}: the files of a directory
at C{/files/NAME}, each sent with C{web.FileResponse} (which sends with
C{loop.sendfile}, so C{os.sendfile}, and handles ranges and validators), the
way an aiohttp application would serve a file. No access log, like the
benchmark's nginx.

It listens on 127.0.0.1 only, prints its bound port as the first line on
stdout, then serves until it is killed::

    python aiohttp_server.py --root DIR --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

HOST = "127.0.0.1"


def makeApp(root: Path) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = root / name
        if name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/files/{name}", handle)
    return app


async def serve(root: Path, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    runner = web.AppRunner(makeApp(root), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    print(sock.getsockname()[1], flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the directory")
    parser.add_argument("--port", type=int, default=0, help="0 for any free port")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    if not root.is_dir():
        parser.error(f"--root {root}: not a directory")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(root, args.port))


if __name__ == "__main__":
    main()
