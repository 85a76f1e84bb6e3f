"""
The browser page in a real headless Chromium, driven by Playwright, against
the real C{twistd zero} in a subprocess.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from .test_twistd import DEADLINE, SERVING_HTTP, Daemon, start

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium")
ARGUMENTS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ENDED = re.compile(r"GET /zero 200 from \S+ \((client closed|client reset)\)")
STREAMS = 4
NONE = "\N{EN DASH}"  # what the page shows where there is no figure


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if CHROMIUM is None:
        pytest.skip("these tests need chromium")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert CHROMIUM is not None
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGUMENTS)
    yield browser
    browser.close()


class Visit:
    """
    A page open in the browser, with what it logged and requested.
    """

    def __init__(self, browser: Browser, url: str) -> None:
        self.page: Page = browser.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on(
            "console",
            lambda message: (
                self.errors.append(message.text) if message.type == "error" else None
            ),
        )
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(url)

    def waitForState(self, *states: str) -> str:
        """
        Wait for the page to be in one of C{states} (without running a
        script in it, which the page's CSP forbids); return it.
        """
        self.page.wait_for_selector(
            ", ".join(f"body[data-state={state}]" for state in states),
            state="attached",
            timeout=DEADLINE * 1000,
        )
        state = self.page.get_attribute("body", "data-state")
        assert state is not None
        return state

    def figure(self, name: str) -> float:
        return float(self.page.inner_text(f"#{name}"))


def serve(daemons: list[Daemon], tmp_path: Path, *args: str) -> str:
    daemon = start(daemons, tmp_path, "--http", "tcp:0:interface=127.0.0.1", *args)
    port = daemon.waitFor(SERVING_HTTP).group("port")
    return f"http://127.0.0.1:{port}"


class BrowserTests:
    def test_autostart(
        self, daemons: list[Daemon], tmp_path: Path, browser: Browser
    ) -> None:
        """
        C{/?autostart=1} measures at once and ends with positive figures for
        download, upload and latency, with no error in the console and no
        request to any other origin.
        """
        origin = serve(daemons, tmp_path)
        visit = Visit(browser, f"{origin}/?autostart=1&seconds=1")
        assert visit.waitForState("done", "error") == "done", visit.page.inner_text(
            "#status"
        )
        for name in ["download-mbps", "upload-mbps", "latency-ms"]:
            assert visit.figure(name) > 0, name
        assert visit.errors == []
        assert visit.requests
        assert [url for url in visit.requests if not url.startswith(origin + "/")] == []
        assert {url.split("?")[0] for url in visit.requests} == {
            f"{origin}/",
            f"{origin}/zero",
            f"{origin}/upload",
        }

    def test_button(
        self, daemons: list[Daemon], tmp_path: Path, browser: Browser
    ) -> None:
        """
        Without C{autostart} the page waits for its Start button.
        """
        origin = serve(daemons, tmp_path)
        visit = Visit(browser, f"{origin}/?seconds=1")
        assert visit.waitForState("idle") == "idle"
        assert visit.requests == [f"{origin}/?seconds=1"]
        visit.page.get_by_role("button", name="Start").click()
        assert visit.waitForState("done", "error") == "done"
        assert visit.figure("download-mbps") > 0
        assert visit.errors == []

    def test_uploadRefused(
        self, daemons: list[Daemon], tmp_path: Path, browser: Browser
    ) -> None:
        """
        When the server refuses the upload, the page says so and ends in
        its error state, with the figures measured so far.
        """
        origin = serve(daemons, tmp_path, "--max-upload", "1K")
        visit = Visit(browser, f"{origin}/?autostart=1&seconds=1")
        assert visit.waitForState("done", "error") == "error"
        assert "upload failed: HTTP 413" in visit.page.inner_text("#status")
        assert visit.figure("download-mbps") > 0
        assert visit.page.inner_text("#upload-mbps") == NONE

    def test_leaving(
        self, daemons: list[Daemon], tmp_path: Path, browser: Browser
    ) -> None:
        """
        When the page is closed in the middle of the download, the daemon
        ends every stream it was sending.
        """
        origin = serve(daemons, tmp_path)
        [daemon] = daemons
        visit = Visit(browser, f"{origin}/?autostart=1&seconds=60")
        visit.waitForState("download")
        end = time.monotonic() + DEADLINE
        while visit.page.inner_text("#download-bytes") == NONE:
            assert time.monotonic() < end, "nothing downloaded"
            time.sleep(0.05)
        visit.page.close()
        for _ in range(STREAMS):
            daemon.waitFor(ENDED)
        assert daemon.stop() == 0
        assert not any("Unhandled" in line for line in daemon.log)
