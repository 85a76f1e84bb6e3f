"""
Parsing of byte sizes given by people: C{65536}, C{64K}, C{1.5M}, C{2G}.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>[KMGT]?)(?:I?B)?", re.I)


def parseSize(text: str) -> int:
    """
    Parse a byte count with an optional binary suffix.

    C{K}, C{M}, C{G} and C{T} are powers of 1024; C{KiB}, C{KB} and C{k} are
    accepted as spellings of C{K}. A fraction is allowed with a suffix
    (C{1.5M}) and the result is rounded down to whole bytes.

    @param text: The size as typed, for example C{"64K"}.
    @return: The number of bytes, never negative.
    @raise ValueError: If C{text} is not a size; the message says why.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a size (use a whole number of bytes, "
            f"optionally followed by K, M or G)"
        )
    number, unit = match.group("number"), match.group("unit").upper()
    if "." in number and not unit:
        raise ValueError(f"{text!r} is not a whole number of bytes")
    multiplier = _UNITS[unit]
    if "." in number:
        whole, fraction = number.split(".")
        scale: int = 10 ** len(fraction)
        return int(whole) * multiplier + int(fraction) * multiplier // scale
    return int(number) * multiplier
