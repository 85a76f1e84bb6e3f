"""
Log observers for C{twistd --logger}.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def jsonLogObserver() -> ILogObserver:
    """
    One JSON object per line on standard output, every field of every event
    kept (for journald and log shippers): C{twistd --logger
    twisted_zero.tap.jsonLogObserver -n zero ...}.
    """
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
