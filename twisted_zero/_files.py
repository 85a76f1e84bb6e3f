"""
The file root: regular files under a directory, looked up off the reactor
thread, answered with validators (304, 412), byte ranges (206, 416, one
range or C{multipart/byteranges}) and, if asked for, directory indexes.
"""

from __future__ import annotations

import enum
import html
import mimetypes
import os
import secrets
from collections.abc import Callable
from functools import partial
from typing import BinaryIO
from urllib.parse import quote

from attrs import define, field, frozen
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.server import NOT_DONE_YET, Request

from ._iopool import IOPool
from ._paths import Listing, NotFound, listUnderRoot, resolveUnderRoot
from ._ranges import UNSATISFIABLE, ByteRange, parseRange
from ._request import StreamRequest
from ._responses import BaseResource, notAllowed, plain
from ._sources import (
    BytesSource,
    ConcatenatedSource,
    FileSource,
    ISource,
    SourceError,
)
from ._validators import (
    evaluatePreconditions,
    httpDate,
    ifRangeAllowsRange,
    makeETag,
)
from ._webstream import ResponseStreamer, requestedRate

_log = Logger()

_ENCODED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}


def _contentType(name: str) -> bytes:
    kind, encoding = mimetypes.guess_type(name, strict=False)
    if encoding is not None:
        kind = _ENCODED_TYPES.get(encoding, "application/octet-stream")
    return (kind or "application/octet-stream").encode("ascii")


@define(eq=False)
class Files(BaseResource):
    """
    The regular files under a root directory, with byte ranges and
    validators; directories as an index if asked for.

    @param root: A real (symlink-free) absolute directory path.
    @param listing: Whether directories get an HTML index.
    @param dotfiles: Whether names starting with a dot may be served.
    @param opener: Opens a file under C{root} (see L{openRegularFile}).
    @param streamer: Streams the files' bytes as response bodies.
    @param ioPool: Where the file system is used (opening, checking,
        listing); L{None} for the reactor thread, at once.
    """

    isLeaf = True

    _root: str = field(alias="root")
    _listing: bool = field(alias="listing")
    _dotfiles: bool = field(alias="dotfiles")
    _open: Callable[[str], tuple[BinaryIO, os.stat_result]] = field(alias="opener")
    _streamer: ResponseStreamer = field(alias="streamer")
    _ioPool: IOPool | None = field(alias="ioPool")

    def __attrs_pre_init__(self) -> None:
        super().__init__()

    def render(self, request: Request) -> bytes | int:
        refused = notAllowed(request)
        if refused is not None:
            return refused
        try:
            rate = requestedRate(request)
        except ValueError as e:
            return plain(request, http.BAD_REQUEST, f"400 Bad Request: {e}")
        path = request.path
        if not (path == b"/files" or path.startswith(b"/files/")):
            # Twisted found this resource by a decoded name (/%66iles/).
            return plain(request, http.NOT_FOUND, "404 Not Found")
        lookup = partial(self._lookup, path[len(b"/files") :], path.endswith(b"/"))
        if self._ioPool is None:
            return self._respond(request, lookup(), rate)
        # The file system may be slow: look in a thread, and give up on what
        # was found if the client goes away meanwhile.
        gone = False
        operation = self._ioPool.submit(
            lookup, lambda found: self._found(request, rate, gone, found)
        )

        def lost(reason: Failure) -> None:
            nonlocal gone
            gone = True
            operation.cancel()

        request.notifyFinish().addErrback(lost)
        return NOT_DONE_YET

    def _lookup(self, raw: bytes, slash: bool) -> _Found:
        """
        In a thread: everything the request needs of the file system. Open
        the file (checking it is still under the root once open), or list
        the directory.
        """
        try:
            resolved = resolveUnderRoot(self._root, raw, self._dotfiles)
            if resolved.kind == "directory":
                if not self._listing:
                    return _NOT_FOUND
                if not slash:
                    return _REDIRECT
                listing = listUnderRoot(self._root, resolved, self._dotfiles)
                return _Listed(_indexPage(resolved.relative, listing))
        except NotFound:
            return _NOT_FOUND
        if slash:
            return _NOT_FOUND  # a file is not a directory: /files/a.txt/
        try:
            file, info = self._open(resolved.path)
        except SourceError:
            return _NOT_FOUND
        if not self._opensUnderRoot(file):
            file.close()
            return _NOT_FOUND
        return _Opened(file, info, resolved.relative)

    def _found(
        self, request: Request, rate: float | None, gone: bool, found: _Found | Failure
    ) -> None:
        """
        In the reactor thread: the lookup is done. Respond, unless the client
        went away meanwhile (then close what was opened).
        """
        if gone:
            if isinstance(found, _Opened):
                found.file.close()
            elif isinstance(found, Failure):
                _log.failure("looking up a file for a client that has gone", found)
            return
        if isinstance(found, Failure):
            request.processingFailed(found)
            return
        try:
            body = self._respond(request, found, rate)
        except BaseException:
            request.processingFailed(Failure())
            return
        if body is NOT_DONE_YET:
            return
        assert isinstance(body, bytes)
        # As Resource.render's caller does with bytes.
        if request.method != b"HEAD" or body:
            request.setHeader(b"content-length", b"%d" % (len(body),))
        request.write(b"" if request.method == b"HEAD" else body)
        request.finish()

    def _respond(
        self, request: Request, found: _Found, rate: float | None
    ) -> bytes | int:
        if isinstance(found, _Opened):
            try:
                return self._file(request, found.file, found.info, found.name, rate)
            except BaseException:
                found.file.close()
                raise
        if isinstance(found, _Listed):
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(b"cache-control", b"no-cache")
            return b"" if request.method == b"HEAD" else found.page
        if found is _REDIRECT:
            location = request.path + b"/"
            request.setHeader(b"location", location)
            return plain(request, http.MOVED_PERMANENTLY, "301 Moved Permanently")
        return plain(request, http.NOT_FOUND, "404 Not Found")

    def _file(
        self,
        request: Request,
        file: BinaryIO,
        info: os.stat_result,
        name: str,
        rate: float | None,
    ) -> bytes | int:
        size = info.st_size
        lastModified = info.st_mtime_ns // 10**9
        etag = makeETag(size, info.st_mtime_ns, info.st_ino)
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"etag", etag.encode("ascii"))
        request.setHeader(b"last-modified", httpDate(lastModified).encode("ascii"))
        # Repeated fields are one comma-separated list (RFC 9110, 5.3).
        headers = {
            key.decode("latin-1").lower(): b", ".join(values).decode("latin-1")
            for key, values in request.requestHeaders.getAllRawHeaders()
        }
        method = request.method.decode("ascii", "replace")
        status = evaluatePreconditions(method, headers, etag, lastModified)
        if status is not None:
            file.close()
            if status == http.NOT_MODIFIED:
                # No Content-Length: a 304's would have to be the 200's.
                request.setResponseCode(http.NOT_MODIFIED)
                request.finish()
                return NOT_DONE_YET
            return plain(request, status, "412 Precondition Failed")
        contentType = _contentType(name)
        ranges: list[ByteRange] | None = None
        # Ranges are defined for GET only (RFC 9110, 14.2).
        if (
            method == "GET"
            and "range" in headers
            and ifRangeAllowsRange(headers.get("if-range"), etag, lastModified)
        ):
            parsed = parseRange(headers["range"], size)
            if parsed is UNSATISFIABLE:
                file.close()
                request.setHeader(b"content-range", b"bytes */%d" % (size,))
                return plain(
                    request,
                    http.REQUESTED_RANGE_NOT_SATISFIABLE,
                    "416 Range Not Satisfiable",
                )
            if isinstance(parsed, list):
                ranges = parsed
        description = f"file:/{name}"
        body: ISource
        if ranges is None:
            length = size
            request.setHeader(b"content-type", contentType)
            body = FileSource(file=file, length=size, description=description)
        elif len(ranges) == 1:
            [only] = ranges
            length = only.stop - only.start
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(b"content-type", contentType)
            request.setHeader(b"content-range", only.contentRange(size).encode())
            body = FileSource(
                file=file,
                length=length,
                offset=only.start,
                description=description,
            )
        else:
            body, length, boundary = _multipart(file, ranges, size, contentType)
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(
                b"content-type", b"multipart/byteranges; boundary=" + boundary
            )
        if ranges is not None and isinstance(request, StreamRequest):
            request.rangeNote = ",".join(f"{r.start}-{r.stop - 1}" for r in ranges)
        request.setHeader(b"content-length", b"%d" % (length,))
        if request.method == b"HEAD":
            body.close()
            return b""
        return self._streamer.stream(request, body, rate=rate)

    def _opensUnderRoot(self, file: BinaryIO) -> bool:
        """
        Whether the file opened is still under the root: a directory on
        the way may have been swapped for a symlink since the path was
        checked. Where the kernel does not say (no C{/proc}), trust the
        check.
        """
        try:
            opened = os.readlink(f"/proc/self/fd/{file.fileno()}")
        except (OSError, ValueError):
            return True
        return os.path.commonpath([self._root, opened]) == self._root


def _indexPage(relative: str, listing: Listing) -> bytes:
    """
    The HTML index of a directory: its entries as links, names escaped.
    """
    entries = []
    for name, isDirectory in listing.entries:
        link = quote(name, safe="")
        if isDirectory:
            link, name = link + "/", name + "/"
        link, name = html.escape(link), html.escape(name)
        entries.append(f'<li><a href="{link}">{name}</a></li>')
    if listing.truncated:
        entries.append(
            f"<li>(the first {len(listing.entries)} entries found; there are more)</li>"
        )
    title = html.escape(f"/{relative}")
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n"
        "<ul>\n" + "\n".join(entries) + "\n</ul></body></html>\n"
    )
    return page.encode("utf-8")


@frozen
class _Opened:
    """
    A file opened under the root for a request.
    """

    file: BinaryIO
    info: os.stat_result
    name: str


@frozen
class _Listed:
    """
    A directory listed for a request: its index page.
    """

    page: bytes


class _Answer(enum.Enum):
    NOT_FOUND = "not found"
    REDIRECT = "redirect"


_NOT_FOUND = _Answer.NOT_FOUND
_REDIRECT = _Answer.REDIRECT
_Found = _Opened | _Listed | _Answer
"""What L{Files} found for a request path."""


def _multipart(
    file: BinaryIO, ranges: list[ByteRange], size: int, contentType: bytes
) -> tuple[ISource, int, bytes]:
    """
    The body of a C{multipart/byteranges} response: each range of C{file}
    after its part headers, then the closing boundary.
    """
    boundary = secrets.token_hex(16)
    parts: list[ISource] = []
    length = 0
    for index, byteRange in enumerate(ranges):
        head = (
            ("\r\n" if index else "")
            + f"--{boundary}\r\nContent-Type: {contentType.decode('ascii')}\r\n"
            f"Content-Range: {byteRange.contentRange(size)}\r\n\r\n"
        ).encode("ascii")
        parts.append(BytesSource(data=head))
        parts.append(
            FileSource(
                file=file,
                length=byteRange.stop - byteRange.start,
                offset=byteRange.start,
            )
        )
        length += len(head) + byteRange.stop - byteRange.start
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    parts.append(BytesSource(data=tail))
    length += len(tail)
    return ConcatenatedSource(parts=parts), length, boundary.encode("ascii")
