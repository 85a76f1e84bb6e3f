"""
Tests for L{twisted_zero._page}: which clients get the browser page at C{/},
and the headers it is served with, over an in-memory transport.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from twisted_zero._page import CONTENT_SECURITY_POLICY, PAGE

from .webserver import Server

CHROMIUM = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
    "image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def accepting(*values: str) -> tuple[str, ...]:
    return tuple(f"Accept: {value}" for value in values)


def directives() -> dict[str, list[str]]:
    """
    The page's CSP, directive by directive.
    """
    policy = CONTENT_SECURITY_POLICY.decode("ascii")
    parsed = {}
    for directive in policy.split(";"):
        name, *sources = directive.split()
        parsed[name] = sources
    return parsed


def inlineHash(tag: str) -> str:
    """
    The CSP source expression of the one inline C{tag} element of the page.
    """
    [body] = re.findall(f"<{tag}>(.*?)</{tag}>".encode(), PAGE, re.DOTALL)
    return f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"


class NegotiationTests:
    @pytest.mark.parametrize(
        "headers",
        [
            accepting(CHROMIUM),
            accepting(FIREFOX),
            accepting("text/html"),
            accepting("TEXT/HTML; charset=utf-8"),
            accepting("text/plain;q=0.5, text/html"),
            accepting("text/*;q=0.5, text/html;q=0.6"),
            accepting("application/xml", "text/html"),
        ],
    )
    def test_page(self, headers: tuple[str, ...]) -> None:
        """
        A client that names C{text/html} and wants it more than
        C{text/plain} gets the page, varying by C{Accept}.
        """
        response = Server(None).get("/", *headers)
        assert response.status == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["vary"] == "Accept"
        assert response.body == PAGE
        assert int(response.headers["content-length"]) == len(PAGE)

    @pytest.mark.parametrize(
        "headers",
        [
            (),
            accepting("*/*"),
            accepting("text/*"),
            accepting("text/plain"),
            accepting("text/html, text/plain"),
            accepting("text/html;q=0.5, text/plain"),
            accepting("text/html;q=0.5, */*"),
            accepting("text/html;q=0"),
            accepting("text/html;q=2"),
            accepting("text/html;q=high"),
            accepting("text/html;q=nan"),
            accepting("application/json"),
            accepting("html"),
            accepting(""),
        ],
    )
    def test_plain(self, headers: tuple[str, ...]) -> None:
        """
        curl, scripts, C{*/*}, no C{Accept}, and any client that does not
        want C{text/html} more than C{text/plain} (or names it with a
        malformed quality) get the plain-text index, varying by C{Accept}.
        """
        response = Server(None).get("/", "User-Agent: curl/7.88.1", *headers)
        assert response.status == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["vary"] == "Accept"
        assert b"/zero" in response.body
        assert "content-security-policy" not in response.headers

    @pytest.mark.parametrize(
        ("headers", "contentType"),
        [
            (accepting(CHROMIUM), "text/html; charset=utf-8"),
            (accepting("*/*"), "text/plain; charset=utf-8"),
        ],
    )
    def test_head(self, headers: tuple[str, ...], contentType: str) -> None:
        """
        C{HEAD /} has the headers of what C{GET} would get and no body.
        """
        get = Server(None).get("/", *headers)
        head = Server(None).get("/", *headers, method="HEAD")
        assert head.status == 200
        assert head.body == b""
        assert head.headers["content-type"] == contentType
        assert head.headers["content-length"] == str(len(get.body))
        assert head.headers["vary"] == "Accept"

    def test_onlyTheRoot(self) -> None:
        """
        A browser asking for something under C{/} that is not there gets the
        plain 404, not the page.
        """
        response = Server(None).get("/nothing", *accepting(CHROMIUM))
        assert response.status == 404
        assert response.headers["content-type"] == "text/plain; charset=utf-8"

    def test_otherMethods(self) -> None:
        """
        A browser's C{POST /} is refused, as anyone's is.
        """
        response = Server(None).get("/", *accepting(CHROMIUM), method="POST")
        assert response.status == 405
        assert response.headers["allow"] == "GET, HEAD"


class HeadersTests:
    def test_served(self) -> None:
        """
        The page is served with its CSP, uncacheable, not to be sniffed, and
        without a referrer for the requests it makes.
        """
        headers = Server(None).get("/", *accepting(CHROMIUM)).headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY.decode()
        assert headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"

    def test_inlineHashes(self) -> None:
        """
        The CSP allows the page's own inline script and style by their
        hashes, and no other script or style.
        """
        policy = directives()
        assert policy["script-src"] == [inlineHash("script")]
        assert policy["style-src"] == [inlineHash("style")]

    def test_strict(self) -> None:
        """
        Anything the CSP does not name is refused; requests go to this
        server only; nothing is loaded from elsewhere, nor evaluated.
        """
        policy = directives()
        assert policy["default-src"] == ["'none'"]
        assert policy["connect-src"] == ["'self'"]
        assert policy["img-src"] == ["data:"]
        assert policy["frame-ancestors"] == ["'none'"]
        assert "unsafe" not in CONTENT_SECURITY_POLICY.decode()

    def test_selfContained(self) -> None:
        """
        The page has one inline script and one inline style, no inline
        handler or style attribute (the CSP would block them), and refers
        to nothing outside this server.
        """
        text = PAGE.decode("utf-8")
        assert text.count("<script") == 1 and text.count("<style") == 1
        assert re.search(r"\son[a-z]+=", text) is None
        assert re.search(r"\sstyle=", text) is None
        assert re.search(r"\s(src|href)=\"(?!data:)", text) is None
        assert re.findall(r"https?://[^\"]*", text) == ["http://www.w3.org/2000/svg"]

    @pytest.mark.parametrize("name", ["download-mbps", "upload-mbps", "latency-ms"])
    def test_figures(self, name: str) -> None:
        """
        The page has the elements the final figures go in.
        """
        assert f'id="{name}"'.encode() in PAGE

    def test_accessible(self) -> None:
        """
        The page announces its progress and results in a live region, and
        labels its progress bars and chart.
        """
        text = PAGE.decode("utf-8")
        assert '<p id="status" role="status" aria-live="polite">' in text
        progress = re.findall(r"<progress [^>]*>", text)
        assert len(progress) == 3
        assert all("aria-label=" in tag for tag in progress)
        assert re.search(r'<svg [^>]*role="img" aria-labelledby="chart-title"', text)


class IndexTests:
    def test_mentionsPage(self) -> None:
        """
        The plain-text index tells its reader that a browser gets the page.
        """
        response = Server(None).get("/", "Accept: */*")
        assert b"In a browser, this address measures" in response.body
