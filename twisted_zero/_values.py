"""
The values people give on the command line: a directory, seconds, a count,
a size. Anything else is refused with one line that names the option.
"""

from __future__ import annotations

import os

from twisted.python import usage

from ._sizes import parseSize


def directoryOption(path: str) -> str:
    """
    The real path of a directory the daemon can read (C{--root}).
    """
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        what = "no such directory" if not os.path.exists(real) else "not a directory"
        raise usage.UsageError(f"--root: {path}: {what}")
    if not os.access(real, os.R_OK | os.X_OK):
        raise usage.UsageError(f"--root: {path}: permission denied")
    return real


def secondsOption(text: str | None, option: str) -> float | None:
    """
    A duration in seconds; L{None} (or 0) for none.
    """
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 10**9:
        raise usage.UsageError(f"--{option}: {text!r} is not a number of seconds")
    return seconds or None


def countOption(text: str | None, option: str) -> int | None:
    """
    A positive whole number; L{None} for none given.
    """
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise usage.UsageError(f"--{option}: {text!r} is not a positive whole number")
    return int(text)


def sizeOption(text: str | None, option: str, minimum: int) -> int | None:
    """
    A size in bytes (see L{parseSize}), at least C{minimum}; L{None} for
    none given.
    """
    if text is None:
        return None
    try:
        size = parseSize(text)
    except ValueError as e:
        raise usage.UsageError(f"{option}: {e}") from None
    if size < minimum:
        raise usage.UsageError(f"{option}: must be at least {minimum} bytes")
    return size
