"""
The browser page at C{/}: it measures latency, download and upload against
this server from the browser, with no asset from anywhere else. L{prefersHTML}
decides which clients get it (browsers do; curl, scripts and C{*/*} get the
plain-text index), L{renderPage} serves it under a Content-Security-Policy
that allows its own inline script and style only, by their hashes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from twisted.web import http
from twisted.web.server import Request

PAGE = files(__package__).joinpath("page.html").read_bytes()
"""
The page, as served.
"""


def _hashes(tag: bytes) -> bytes:
    """
    The CSP source expressions (C{'sha256-...'}) of the inline C{tag}
    elements of L{PAGE}.
    """
    found = re.findall(b"<%s>(.*?)</%s>" % (tag, tag), PAGE, re.DOTALL)
    if not found:
        raise ValueError(f"no inline <{tag.decode()}> in the page")
    return b" ".join(
        b"'sha256-%s'" % (base64.b64encode(hashlib.sha256(body).digest()),)
        for body in found
    )


CONTENT_SECURITY_POLICY = b"; ".join(
    [
        b"default-src 'none'",
        b"script-src " + _hashes(b"script"),
        b"style-src " + _hashes(b"style"),
        b"connect-src 'self'",
        b"img-src data:",
        b"base-uri 'none'",
        b"form-action 'none'",
        b"frame-ancestors 'none'",
    ]
)
"""
The page's C{Content-Security-Policy}: its own inline script and style,
requests to this server, nothing else.
"""


def _mediaRanges(accept: str) -> list[tuple[str, str, float]]:
    """
    The media ranges of an C{Accept} header value, each with its quality;
    malformed ranges and qualities are left out.
    """
    ranges = []
    for item in accept.split(","):
        mediaRange, *parameters = item.split(";")
        kind, slash, subtype = mediaRange.strip().lower().partition("/")
        if not (kind and slash and subtype):
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = -1.0
        if 0 <= quality <= 1:
            ranges.append((kind, subtype, quality))
    return ranges


def _quality(ranges: list[tuple[str, str, float]], kind: str, subtype: str) -> float:
    """
    The quality of the most specific of C{ranges} that matches
    C{kind/subtype}, or 0 if none does.
    """
    matches = {
        (k, s): q for k, s, q in ranges if k in (kind, "*") and s in (subtype, "*")
    }
    for key in [(kind, subtype), (kind, "*"), ("*", "*")]:
        if key in matches:
            return matches[key]
    return 0.0


def prefersHTML(request: Request) -> bool:
    """
    Whether the client's C{Accept} headers name C{text/html} and want it
    more than C{text/plain}: browsers do; curl, scripts and C{*/*} do not.
    """
    accept = ",".join(
        value.decode("latin-1")
        for value in request.requestHeaders.getRawHeaders(b"accept", [])
    )
    ranges = _mediaRanges(accept)
    named = any((k, s) == ("text", "html") for k, s, _ in ranges)
    html = _quality(ranges, "text", "html")
    return named and html > _quality(ranges, "text", "plain")


def renderPage(request: Request) -> bytes:
    """
    Answer with the page (the headers only, for C{HEAD}).
    """
    request.setResponseCode(http.OK)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % (len(PAGE),))
    request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    return b"" if request.method == b"HEAD" else PAGE
