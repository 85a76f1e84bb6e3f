"""
Byte ranges of a file, from a C{Range} request header (RFC 9110 section 14).

Pure parsing and arithmetic: nothing here does I/O or imports Twisted.
"""

from __future__ import annotations

import enum
import re
from typing import Final, TypeAlias

from attrs import field, frozen

MAX_RANGES = 16
"""The most range specs a C{Range} header may hold before it is ignored."""

_MAX_DIGITS = 20
"""The longest number a range spec may hold; longer ones make it malformed."""

_SPEC = re.compile(
    rf"(?P<first>[0-9]{{1,{_MAX_DIGITS}}})-(?P<last>[0-9]{{0,{_MAX_DIGITS}}})"
    rf"|-(?P<suffix>[0-9]{{1,{_MAX_DIGITS}}})"
)
"""One range spec: C{first-last}, C{first-} or C{-suffix}, ASCII digits only."""

_OWS = " \t"


def _nonNegative(instance: object, attribute: object, value: int) -> None:
    if value < 0:
        raise ValueError(f"range start {value} is negative")


def _afterStart(instance: ByteRange, attribute: object, value: int) -> None:
    if value <= instance.start:
        raise ValueError(f"range stop {value} is not after start {instance.start}")


@frozen
class ByteRange:
    """
    A non-empty, half-open range of byte offsets in a file.

    @ivar start: The offset of the first byte, inclusive.
    @ivar stop: One past the offset of the last byte, so the range holds
        C{stop - start} (at least one) bytes.
    """

    start: int = field(validator=_nonNegative)
    stop: int = field(validator=_afterStart)

    def contentRange(self, size: int) -> str:
        """
        The C{Content-Range} field value for this range of a file.

        @param size: The size of the whole file in bytes.
        @return: For example C{"bytes 0-499/1234"}.
        """
        return f"bytes {self.start}-{self.stop - 1}/{size}"


class Unsatisfiable(enum.Enum):
    """
    The type of L{UNSATISFIABLE}: a C{Range} header none of whose range specs
    overlaps the file (answer 416 with C{Content-Range: bytes */SIZE}).

    An enumeration of one member, so that both C{isinstance(result,
    Unsatisfiable)} and C{result is UNSATISFIABLE} narrow the type.
    """

    UNSATISFIABLE = "unsatisfiable"

    def __repr__(self) -> str:
        return "UNSATISFIABLE"


UNSATISFIABLE: Final = Unsatisfiable.UNSATISFIABLE
"""The only value of L{Unsatisfiable}."""


_Spec: TypeAlias = tuple[int, int | None] | int
"""A parsed range spec: C{(first, last or None)}, or a suffix length."""


def _parseSpecs(header: str, maxRanges: int) -> list[_Spec] | None:
    """
    Parse a C{Range} field value into its range specs, unclipped.

    @return: The specs in the order given, or L{None} if the value is not a
        well-formed C{bytes} range set of at most C{maxRanges} specs.
    """
    unit, equals, rangeSet = header.strip(_OWS).partition("=")
    if not equals or not unit.isascii() or unit.lower() != "bytes":
        return None
    specs: list[_Spec] = []
    # The #rule: elements separated by OWS "," OWS, empty elements allowed.
    for index, element in enumerate(rangeSet.split(",")):
        text = element.strip(_OWS)
        if not text:
            continue
        if index == 0 and element[0] in _OWS:
            # No whitespace between "=" and the first range spec.
            return None
        if len(specs) == maxRanges:
            return None
        match = _SPEC.fullmatch(text)
        if match is None:
            return None
        suffix = match["suffix"]
        if suffix is not None:
            specs.append(int(suffix))
            continue
        first = int(match["first"])
        last = int(match["last"]) if match["last"] else None
        if last is not None and last < first:
            return None
        specs.append((first, last))
    return specs or None


def parseRange(
    header: str | None, size: int, maxRanges: int = MAX_RANGES
) -> list[ByteRange] | Unsatisfiable | None:
    """
    Work out which byte ranges of a file a C{Range} header asks for.

    Each range spec is clipped to the file: C{a-b} to C{[a, min(b, size-1)]},
    C{a-} to C{[a, size-1]}, C{-n} to the last C{min(n, size)} bytes. A spec
    starting at or after the end of the file, C{-0}, and any spec of an empty
    file select nothing and are dropped. The others are kept in the order
    given, neither sorted nor coalesced; but several ranges adding up to more
    than the file are refused (nginx's rule), so overlapping ranges cannot
    make a response larger than the file.

    @param header: The C{Range} field value, decoded as latin-1, or L{None}
        if the request has none.
    @param size: The current size of the file in bytes.
    @param maxRanges: The most range specs accepted.
    @return: L{None} to ignore the header and send the whole file (no
        header; malformed in any way; a unit other than C{bytes}; more than
        C{maxRanges} specs; several ranges larger together than the file),
        L{UNSATISFIABLE} if no spec selects any byte, or else the selected
        ranges, each within C{[0, size)}.
    @raise ValueError: If C{size} is negative. Never for any C{header}.
    """
    if size < 0:
        raise ValueError(f"file size {size} is negative")
    if header is None:
        return None
    specs = _parseSpecs(header, maxRanges)
    if specs is None:
        return None
    ranges = []
    for spec in specs:
        if isinstance(spec, int):
            if spec > 0 and size > 0:
                ranges.append(ByteRange(size - min(spec, size), size))
        else:
            first, last = spec
            if first < size:
                stop = size if last is None else min(last + 1, size)
                ranges.append(ByteRange(first, stop))
    if not ranges:
        return UNSATISFIABLE
    if len(ranges) > 1 and sum(r.stop - r.start for r in ranges) > size:
        return None
    return ranges
