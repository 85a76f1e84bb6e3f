#!/usr/bin/env python3
"""
Reference servers for C{bench.py}, each written only with public APIs, the
way an application would write them:

  - C{asyncio-stream}: C{writer.write(chunk)} then C{await writer.drain()}
    in a loop; for zeros the chunk is one shared C{bytes} object, for a file
    it is C{file.read(chunk_size)}.
  - C{asyncio-sendfile}: C{await loop.sendfile(transport, file)} (files only).
  - C{twisted-filesender}: L{twisted.protocols.basic.FileSender} as it is,
    with its own 16 KiB chunks (files only).

Every connection gets its own stream (a file is opened anew per connection
and the connection closed after its last byte; zeros go on until the client
leaves). The server listens on 127.0.0.1 only, prints its bound port as the
first line on stdout, then serves until it is killed::

    python reference_servers.py --kind asyncio-stream --source zero --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, BinaryIO

HOST = "127.0.0.1"
KINDS = ("asyncio-stream", "asyncio-sendfile", "twisted-filesender")
FILE_ONLY_KINDS = ("asyncio-sendfile", "twisted-filesender")
DEFAULT_CHUNK_SIZE = 256 * 1024

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _handler(send: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> StreamHandler:
    """
    A connection's handler: C{send} its stream, then close the connection
    once all is written; a client that leaves ends it too.
    """

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await send(writer)
            writer.close()
            await writer.wait_closed()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handle


def _streamZeros(chunkSize: int) -> StreamHandler:
    chunk = bytes(chunkSize)

    async def send(writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(chunk)
            await writer.drain()

    return _handler(send)


def _streamFile(path: str, chunkSize: int) -> StreamHandler:
    async def send(writer: asyncio.StreamWriter) -> None:
        with open(path, "rb", buffering=0) as file:
            while data := file.read(chunkSize):
                writer.write(data)
                await writer.drain()

    return _handler(send)


def _sendFile(path: str) -> StreamHandler:
    async def send(writer: asyncio.StreamWriter) -> None:
        with open(path, "rb") as file:
            await asyncio.get_running_loop().sendfile(writer.transport, file)

    return _handler(send)


async def _serveAsyncio(handler: StreamHandler, port: int) -> None:
    server = await asyncio.start_server(handler, HOST, port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def _serveFileSender(path: str, port: int) -> None:
    from twisted.internet import reactor
    from twisted.internet.protocol import Protocol, ServerFactory
    from twisted.protocols.basic import FileSender
    from twisted.python.failure import Failure

    class FileSenderProtocol(Protocol):
        def __init__(self) -> None:
            self._file: BinaryIO | None = None

        def connectionMade(self) -> None:
            self._file = open(path, "rb")  # noqa: SIM115 (closed when done)
            sender = FileSender()
            done = sender.beginFileTransfer(self._file, self.transport)
            done.addBoth(self._finished)

        def _finished(self, result: object) -> None:
            self._closeFile()
            assert self.transport is not None
            self.transport.loseConnection()

        def connectionLost(self, reason: Failure | None = None) -> None:
            self._closeFile()

        def _closeFile(self) -> None:
            file, self._file = self._file, None
            if file is not None:
                file.close()

    factory = ServerFactory.forProtocol(FileSenderProtocol)
    factory.noisy = False
    tcp: Any = reactor
    listening = tcp.listenTCP(port, factory, interface=HOST)
    print(listening.getHost().port, flush=True)
    tcp.run()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument(
        "--source", required=True, help="zero, or file:PATH (a regular file)"
    )
    parser.add_argument("--port", type=int, default=0, help="0 for any free port")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help="bytes per write for asyncio-stream (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    source: str = args.source
    path = source.removeprefix("file:") if source.startswith("file:") else None
    if source != "zero" and not path:
        parser.error("--source must be zero or file:PATH")
    if path is None and args.kind in FILE_ONLY_KINDS:
        parser.error(f"--kind {args.kind} serves files only")
    if args.chunk_size < 1:
        parser.error("--chunk-size must be positive")

    with contextlib.suppress(KeyboardInterrupt):
        if args.kind == "twisted-filesender":
            assert path is not None
            _serveFileSender(path, args.port)
        elif args.kind == "asyncio-sendfile":
            assert path is not None
            asyncio.run(_serveAsyncio(_sendFile(path), args.port))
        elif path is None:
            asyncio.run(_serveAsyncio(_streamZeros(args.chunk_size), args.port))
        else:
            asyncio.run(_serveAsyncio(_streamFile(path, args.chunk_size), args.port))


if __name__ == "__main__":
    main()
