"""
The upload sink, C{POST} or C{PUT /upload}: the body is counted and thrown
away as it arrives (L{DiscardedBody}), then answered with how many bytes
came and in how long, as JSON, for a client measuring its upload.
"""

from __future__ import annotations

import json
from urllib.parse import unquote_to_bytes

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.web import http
from twisted.web.server import Request

from ._request import DiscardedBody, originForm
from ._responses import BaseResource, plain

UPLOAD_PATH = b"/upload"
"""
Where the upload sink is, in the HTTP front end.
"""

UPLOAD_METHODS = (b"POST", b"PUT")


def isUpload(target: bytes) -> bool:
    """
    Whether the request target C{target} (in origin or absolute form) is
    the upload sink, as Twisted's resource traversal would find it (its
    path segments are percent-decoded; a trailing slash is allowed).
    """
    path = originForm(target).partition(b"?")[0]
    segments = [unquote_to_bytes(segment) for segment in path[1:].split(b"/")]
    return segments in ([UPLOAD_PATH[1:]], [UPLOAD_PATH[1:], b""])


@define(eq=False)
class Upload(BaseResource):
    """
    C{/upload}: answer a C{POST} or C{PUT} with C{{"bytes": N, "seconds":
    T}}, the body's length and the seconds from the end of the request head
    to the end of the body, on the server's clock.

    The body was thrown away as it came, under the site's upload limit
    (see L{StreamSite.bodyLimit<twisted_zero._site.StreamSite.bodyLimit>});
    under another site, which stores bodies, only its length is known.

    @param clock: Times the bodies.
    """

    isLeaf = True

    _clock: IReactorTime = field(alias="clock")

    def __attrs_pre_init__(self) -> None:
        super().__init__()

    def render(self, request: Request) -> bytes:
        if request.method not in UPLOAD_METHODS:
            request.setHeader(b"allow", b", ".join(UPLOAD_METHODS))
            return plain(
                request,
                http.NOT_ALLOWED,
                "405 Method Not Allowed: upload with POST or PUT",
            )
        if request.postpath not in ([], [b""]):
            return plain(request, http.NOT_FOUND, "404 Not Found")
        body = request.content
        seconds: float | None = None
        if isinstance(body, DiscardedBody):
            received = body.received
            seconds = round(self._clock.seconds() - body.started, 6)
        else:
            assert body is not None  # set before any request is rendered
            received = body.seek(0, 2)
        answer = json.dumps({"bytes": received, "seconds": seconds}).encode() + b"\n"
        request.setResponseCode(http.OK)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-length", b"%d" % (len(answer),))
        return answer
