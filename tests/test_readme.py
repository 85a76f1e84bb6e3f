"""
The README's library example runs as shown.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import twisted_zero

PROJECT = Path(twisted_zero.__file__).resolve().parent.parent


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
