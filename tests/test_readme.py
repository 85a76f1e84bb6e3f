"""
The README's examples run as shown: the library example, and the shell
examples, each literal block after a C{.. test: twisted-zero serve ARGS}
comment, run line by line against a real daemon started with those
arguments (on ports of its own); a line's trailing C{# OUTPUT} comment, if
any, is what it must print.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .test_twistd import (
    DEADLINE,
    PROJECT,
    SERVING_HTTP,
    Daemon,
    environment,
    serveCommand,
    start,
)


def readmeExample() -> str:
    readme = (PROJECT / "README.rst").read_text()
    block = readme.split(".. code-block:: python\n\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("   "):
            break
        lines.append(line[3:])
    return "\n".join(lines)


class ReadmeTests:
    """
    The README's examples work as shown.
    """

    def test_sendFileExample(self, tmp_path: Path) -> None:
        """
        The example serves the file it is given to each client, then closes.
        """
        script = tmp_path / "sendfile.py"
        script.write_text(readmeExample())
        data = tmp_path / "data"
        content = os.urandom(3 * 2**20 + 1)
        data.write_bytes(content)
        process = subprocess.Popen(
            [sys.executable, str(script), str(data), "tcp:0:interface=127.0.0.1"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
        )
        try:
            assert process.stdout is not None
            match = re.fullmatch(r"serving on (\d+)\n", process.stdout.readline())
            assert match is not None
            for _ in range(2):
                with socket.create_connection(
                    ("127.0.0.1", int(match.group(1))), timeout=30
                ) as client:
                    received = bytearray()
                    while chunk := client.recv(1 << 20):
                        received += chunk
                assert received == content
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


README = PROJECT / "README.rst"
MARKER = re.compile(r"^\.\. test: twisted-zero serve(?P<args>.*)$")
RAW_PORT = "8019"
HTTP_PORT = "8080"
TOOLS = {"nc": "netcat-openbsd", "curl": "curl"}


def examples(text: str) -> list[tuple[str, str]]:
    """
    The examples of C{text}: the daemon's arguments and a command line,
    for each line of each literal block after a marker.
    """
    found: list[tuple[str, str]] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        marker = MARKER.match(line)
        if marker is None:
            continue
        rest = iter(lines[index + 1 :])
        for line in rest:
            if line.rstrip().endswith("::"):
                break
        for line in rest:
            if line and not line.startswith("   "):
                break
            if line.strip():
                found.append((marker.group("args").strip(), line.strip()))
    return found


EXAMPLES = examples(README.read_text())


def expected(line: str) -> str | None:
    """
    What C{line} must print, if it says.
    """
    command, hash, comment = line.partition("  # ")
    return comment.strip() if hash else None


@pytest.mark.e2e
class ExamplesTests:
    def test_found(self) -> None:
        """
        The README has examples to run, and each says what it needs.
        """
        assert len(EXAMPLES) >= 2
        assert examples(
            ".. test: twisted-zero serve --http tcp:8080\n\n"
            "Text::\n\n   a  # 1\n   b\n\nafter\n"
        ) == [("--http tcp:8080", "a  # 1"), ("--http tcp:8080", "b")]

    @pytest.mark.parametrize(
        ("args", "line"), EXAMPLES, ids=[line for _, line in EXAMPLES]
    )
    def test_example(
        self, daemons: list[Daemon], tmp_path: Path, args: str, line: str
    ) -> None:
        """
        Each example runs as the README says, and prints what it says.
        """
        for tool, package in TOOLS.items():
            if re.search(rf"(^|\|)\s*{tool}\b", line) and shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed (Debian's {package})")
        daemonArgs = [
            arg.replace(f"tcp:{HTTP_PORT}", "tcp:0").replace(f"tcp:{RAW_PORT}", "tcp:0")
            for arg in shlex.split(args)
        ]
        daemon = start(daemons, tmp_path, *daemonArgs, command=serveCommand)
        command = line.partition("  # ")[0]
        command = command.replace(
            f"127.0.0.1 {RAW_PORT}", f"127.0.0.1 {daemon.port}"
        ).replace(f"127.0.0.1:{RAW_PORT}", f"127.0.0.1:{daemon.port}")
        if HTTP_PORT in command:
            logged = [SERVING_HTTP.search(line) for line in daemon.log]
            found = [match for match in logged if match is not None]
            httpPort = (found[0] if found else daemon.waitFor(SERVING_HTTP)).group(
                "port"
            )
            command = command.replace(f":{HTTP_PORT}", f":{httpPort}")
        command = command.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        env = environment()
        result = subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            cwd=PROJECT,
            env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
            stdin=subprocess.DEVNULL,
            timeout=DEADLINE * 2,
            check=False,
        )
        want = expected(line)
        if want is None:
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip(), result.stderr
        else:
            assert result.stdout.strip() == want, result.stderr
