"""
End-to-end tests of C{twisted-zero measure}: the real command in a
subprocess against the real daemon, run by C{twisted-zero serve}, on
127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import writeTLSFiles
from .test_measure import checkDocument
from .test_twistd import (
    DEADLINE,
    SERVING_HTTP,
    Daemon,
    environment,
    serveCommand,
    start,
)

pytestmark = pytest.mark.e2e


def runMeasure(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twisted_zero", "measure", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=tmp_path,
        env=environment(),
        check=False,
    )


def measureJSON(tmp_path: Path, *args: str) -> dict[str, Any]:
    result = runMeasure(tmp_path, "--json", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document: dict[str, Any] = json.loads(result.stdout)
    checkDocument(document)
    return document


def httpURL(daemon: Daemon, scheme: str = "http") -> str:
    port = daemon.waitFor(SERVING_HTTP).group("port")
    return f"{scheme}://127.0.0.1:{port}"


class MeasureE2ETests:
    def test_rawBytes(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        Four raw streams of exactly 8 MiB each; the figures add up.
        """
        daemon = start(daemons, tmp_path, command=serveCommand)
        document = measureJSON(
            tmp_path, "-P", "4", "--bytes", "8M", f"tcp:127.0.0.1:{daemon.port}"
        )
        assert [s["bytes"] for s in document["end"]["streams"]] == [8 * 2**20] * 4
        assert document["end"]["sum"]["bytes"] == 32 * 2**20

    def test_rawTimed(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        A timed raw stream (C{HOST:PORT}) with interval reports, as text.
        """
        daemon = start(daemons, tmp_path, command=serveCommand)
        result = runMeasure(
            tmp_path, "-t", "1", "-i", "0.5", f"127.0.0.1:{daemon.port}"
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert (
            lines[0] == f"1 stream receiving from tcp:127.0.0.1:{daemon.port}, 1 second"
        )
        assert lines[-1].endswith("receiver")

    def test_httpDownload(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        HTTP: C{--bytes} asks the generated stream for that many bytes.
        """
        daemon = start(
            daemons,
            tmp_path,
            "--http",
            "tcp:0:interface=127.0.0.1",
            command=serveCommand,
        )
        url = httpURL(daemon)
        document = measureJSON(tmp_path, "-P", "2", "--bytes", "3M", url + "/random")
        assert document["end"]["sum"]["bytes"] == 6 * 2**20
        timed = measureJSON(tmp_path, "-t", "0.5", url + "/zero")
        assert timed["end"]["sum"]["bytes"] > 0

    def test_https(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        HTTPS and raw TLS with C{--ca}; without it, the self-signed
        certificate is refused in one line, unless C{--insecure}.
        """
        tls = writeTLSFiles(tmp_path)
        endpoint = tls.serverEndpoint()
        daemon = start(daemons, tmp_path, "--http", endpoint, command=serveCommand)
        url = httpURL(daemon, "https")
        ca = str(tls.certPath)
        document = measureJSON(tmp_path, "--ca", ca, "--bytes", "2M", url + "/zero")
        assert document["end"]["sum"]["bytes"] == 2 * 2**20
        measureJSON(tmp_path, "--insecure", "--bytes", "1M", url + "/zero")
        refused = runMeasure(tmp_path, "--bytes", "1M", url + "/zero")
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1
        assert refused.stderr.startswith(
            f"twisted-zero measure: cannot connect to {url}"
        )

    def test_uploadRaw(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{--upload} to a raw listener sends exactly C{--bytes}.
        """
        daemon = start(daemons, tmp_path, command=serveCommand)
        document = measureJSON(
            tmp_path, "--upload", "--bytes", "16M", f"tcp:127.0.0.1:{daemon.port}"
        )
        assert document["end"]["sum"]["bytes"] == 16 * 2**20

    def test_uploadHTTP(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        C{--upload} to the HTTP upload sink: the server's answer is in the
        report and agrees on the bytes.
        """
        daemon = start(
            daemons,
            tmp_path,
            "--http",
            "tcp:0:interface=127.0.0.1",
            command=serveCommand,
        )
        url = httpURL(daemon) + "/upload"
        document = measureJSON(tmp_path, "--upload", "-P", "2", "--bytes", "5M", url)
        for stream in document["end"]["streams"]:
            assert stream["bytes"] == 5 * 2**20
            assert stream["server"]["bytes"] == 5 * 2**20
        timed = measureJSON(tmp_path, "--upload", "-t", "0.5", url)
        (stream,) = timed["end"]["streams"]
        assert stream["server"]["bytes"] == stream["bytes"]

    def test_latency(self, daemons: list[Daemon], tmp_path: Path) -> None:
        """
        Round trips over HTTP and raw connects.
        """
        daemon = start(
            daemons,
            tmp_path,
            "--http",
            "tcp:0:interface=127.0.0.1",
            command=serveCommand,
        )
        url = httpURL(daemon)
        for target in (url + "/zero", f"tcp:127.0.0.1:{daemon.port}"):
            result = runMeasure(tmp_path, "--latency", "--count", "5", "--json", target)
            assert result.returncode == 0, result.stderr
            latency = json.loads(result.stdout)["latency"]
            assert latency["count"] == 5
            assert latency["min_ms"] <= latency["median_ms"] <= latency["p99_ms"]

    def test_errors(self, tmp_path: Path) -> None:
        """
        An unreachable target: one line, exit code 1, no traceback; a bad
        option: exit code 2.
        """
        refused = runMeasure(tmp_path, "tcp:127.0.0.1:1")
        assert refused.returncode == 1
        assert refused.stderr == (
            "twisted-zero measure: cannot connect to tcp:127.0.0.1:1: "
            "Connection refused\n"
        )
        bad = runMeasure(tmp_path, "-P", "x", "tcp:127.0.0.1:1")
        assert bad.returncode == 2
        assert "Traceback" not in bad.stderr
