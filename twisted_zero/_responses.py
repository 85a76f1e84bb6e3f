"""
What the resources and the channel share: small plain-text HTTP responses
(and the whole one that refuses a request before it is parsed), the methods
allowed, the largest body length, an annotated base class.
"""

from __future__ import annotations

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request

ALLOWED_METHODS = [b"GET", b"HEAD"]

MAX_CONTENT_LENGTH = 2**63 - 1
"""
The largest C{Content-Length} a client can be expected to parse (a signed
64-bit number), so the most C{?bytes=} may ask for.
"""


_REASONS = {
    http.BAD_REQUEST: b"Bad Request",
    http.REQUEST_TIMEOUT: b"Request Timeout",
    http.REQUEST_ENTITY_TOO_LARGE: b"Content Too Large",
    http.REQUEST_URI_TOO_LONG: b"URI Too Long",
    431: b"Request Header Fields Too Large",
}


def refusal(code: int, why: str) -> bytes:
    """
    A whole HTTP/1.1 response refusing a request the channel will not parse
    further: C{code} (400, 408, 413, 414 or 431) and C{why} as one line of
    uncacheable text; the connection closes after it.
    """
    reason = _REASONS[code]
    body = b"%d %s: %s\n" % (code, reason, why.encode("ascii", "replace"))
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nCache-Control: no-store\r\n"
        b"Connection: close\r\n\r\n%s" % (code, reason, len(body), body)
    )


def plain(request: Request, code: int, message: str) -> bytes:
    """
    Answer with C{code} and C{message} as one line of uncacheable text (the
    headers only, for C{HEAD}).
    """
    body = f"{message}\n".encode()
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % (len(body),))
    return b"" if request.method == b"HEAD" else body


def notAllowed(request: Request) -> bytes | None:
    """
    L{None} for C{GET} and C{HEAD}; otherwise the 405 response, with its
    C{Allow} header.
    """
    if request.method in ALLOWED_METHODS:
        return None
    request.setHeader(b"allow", b", ".join(ALLOWED_METHODS))
    return plain(request, http.NOT_ALLOWED, "405 Method Not Allowed: use GET or HEAD")


class BaseResource(Resource):
    """
    A L{Resource} whose constructor is annotated, for the resources here to
    build on.
    """

    def __init__(self) -> None:
        super().__init__()
