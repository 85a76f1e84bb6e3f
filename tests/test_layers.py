"""
The layers' dependencies: what the raw stream needs imports nothing of
C{twisted.web}.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import twisted_zero

_PACKAGE = Path(twisted_zero.__file__).parent

_IMPORTED_WEB = """
import importlib.util, sys, types
package = types.ModuleType("twisted_zero")
package.__path__ = [sys.argv[1]]  # the package without its __init__
sys.modules["twisted_zero"] = package
importlib.import_module("twisted_zero." + sys.argv[2])
print(sorted(name for name in sys.modules if name.startswith("twisted.web")))
"""


class LayerTests:
    """
    Below the HTTP site, nothing imports C{twisted.web}, so a raw-TCP
    daemon or a library user streaming to a transport does not load it.
    """

    @pytest.mark.parametrize(
        "module",
        ["_protocol", "_producer", "_send", "_read", "_outlet", "_sources"],
    )
    def test_noWeb(self, module: str) -> None:
        """
        Importing the module (and all it imports) loads no C{twisted.web}
        module.
        """
        result = subprocess.run(
            [sys.executable, "-c", _IMPORTED_WEB, str(_PACKAGE), module],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert result.stdout.strip() == "[]", result.stdout

    def test_webIsSeen(self) -> None:
        """
        The check sees C{twisted.web} where it is imported: the HTTP outlet.
        """
        result = subprocess.run(
            [sys.executable, "-c", _IMPORTED_WEB, str(_PACKAGE), "_httpoutlet"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "'twisted.web.http'" in result.stdout
