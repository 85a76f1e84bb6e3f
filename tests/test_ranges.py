"""
Tests for L{twisted_zero._ranges}: parsing C{Range} headers into byte ranges.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_zero._ranges import (
    MAX_RANGES,
    UNSATISFIABLE,
    ByteRange,
    Unsatisfiable,
    parseRange,
)

SIZE = 10000

Expected = list[tuple[int, int]] | Unsatisfiable | None


def ranges(*pairs: tuple[int, int]) -> list[tuple[int, int]]:
    """
    Inclusive C{(first, last)} byte offsets, as in C{Content-Range}.
    """
    return list(pairs)


def asPairs(result: list[ByteRange] | Unsatisfiable | None) -> Expected:
    if isinstance(result, list):
        return [(r.start, r.stop - 1) for r in result]
    return result


class ParseRangeTests:
    @pytest.mark.parametrize(
        ("header", "size", "expected"),
        [
            pytest.param("bytes=0-499", SIZE, ranges((0, 499)), id="first500"),
            pytest.param("bytes=500-999", SIZE, ranges((500, 999)), id="second500"),
            pytest.param("bytes=-500", SIZE, ranges((9500, 9999)), id="suffix"),
            pytest.param("bytes=-20000", SIZE, ranges((0, 9999)), id="suffixTooLong"),
            pytest.param("bytes=9500-", SIZE, ranges((9500, 9999)), id="open"),
            pytest.param("bytes=-1", SIZE, ranges((9999, 9999)), id="lastByte"),
            pytest.param("bytes=0-", SIZE, ranges((0, 9999)), id="wholeFile"),
            pytest.param("bytes=0-0", SIZE, ranges((0, 0)), id="firstByte"),
            pytest.param("bytes=9999-9999", SIZE, ranges((9999, 9999)), id="lastAt"),
            pytest.param("bytes=9000-20000", SIZE, ranges((9000, 9999)), id="clipped"),
            pytest.param(
                "bytes=0-0,-1", SIZE, ranges((0, 0), (9999, 9999)), id="multi"
            ),
            pytest.param(
                "bytes=0-5,3-8", SIZE, ranges((0, 5), (3, 8)), id="overlapKept"
            ),
            pytest.param(
                "bytes=500-599,0-99", SIZE, ranges((500, 599), (0, 99)), id="notSorted"
            ),
            pytest.param(
                "bytes=0-0,1-1", SIZE, ranges((0, 0), (1, 1)), id="adjacentKept"
            ),
            pytest.param(
                "bytes=0-4999,0-4999",
                SIZE,
                ranges((0, 4999), (0, 4999)),
                id="sumIsSize",
            ),
            pytest.param("bytes=0-5000,0-4999", SIZE, None, id="sumOverSize"),
            pytest.param(
                "bytes=" + ",".join(["0-"] * 16), SIZE, None, id="manyOverlapping"
            ),
            pytest.param("bytes=-1,-10000", SIZE, None, id="suffixesOverSize"),
            pytest.param(
                "bytes=" + ",".join(f"{i}-{i}" for i in range(16)),
                SIZE,
                ranges(*((i, i) for i in range(16))),
                id="16ranges",
            ),
            pytest.param(
                "bytes=" + ",".join(f"{i}-{i}" for i in range(17)),
                SIZE,
                None,
                id="17ranges",
            ),
            pytest.param(
                "bytes=" + ",".join(f"{i}-{i}" for i in range(16)) + ",,,",
                SIZE,
                ranges(*((i, i) for i in range(16))),
                id="emptyElementsNotCounted",
            ),
            pytest.param("bytes=10000-", SIZE, UNSATISFIABLE, id="startAtEnd"),
            pytest.param("bytes=10000-10001", SIZE, UNSATISFIABLE, id="afterEnd"),
            pytest.param("bytes=-0", SIZE, UNSATISFIABLE, id="emptySuffix"),
            pytest.param("bytes=-0,20000-", SIZE, UNSATISFIABLE, id="allUnsatisfiable"),
            pytest.param(
                "bytes=20000-,-0,5-9,10000-",
                SIZE,
                ranges((5, 9)),
                id="mixed",
            ),
            pytest.param("bytes=", SIZE, None, id="emptySet"),
            pytest.param("bytes=,", SIZE, None, id="onlyEmptyElements"),
            pytest.param("bytes=-", SIZE, None, id="dashOnly"),
            pytest.param("bytes=a-b", SIZE, None, id="letters"),
            pytest.param("bytes=0x1-2", SIZE, None, id="hex"),
            pytest.param("bytes=5-1", SIZE, None, id="backwards"),
            pytest.param("bytes=0-1,5-1", SIZE, None, id="oneBackwards"),
            pytest.param("bytes 0-1", SIZE, None, id="noEquals"),
            pytest.param("bytes =0-1", SIZE, None, id="spaceBeforeEquals"),
            pytest.param("bytes= 0-1", SIZE, None, id="spaceAfterEquals"),
            pytest.param("items=0-1", SIZE, None, id="otherUnit"),
            pytest.param("=0-1", SIZE, None, id="noUnit"),
            pytest.param("bytes=0-1;x", SIZE, None, id="parameter"),
            pytest.param("bytes=--1", SIZE, None, id="doubleDash"),
            pytest.param("bytes=+1-2", SIZE, None, id="plusSign"),
            pytest.param("bytes=-+1", SIZE, None, id="plusSuffix"),
            pytest.param("bytes=1 -2", SIZE, None, id="spaceInside"),
            pytest.param("bytes=1- 2", SIZE, None, id="spaceInsideAfterDash"),
            pytest.param("bytes=1-2-3", SIZE, None, id="twoDashes"),
            pytest.param("bytes=0-1 2-3", SIZE, None, id="noComma"),
            pytest.param("bytes=0-1,junk", SIZE, None, id="oneJunk"),
            pytest.param("bytes=\u0661-\u0662", SIZE, None, id="nonAsciiDigits"),
            pytest.param("bytes=1_0-20", SIZE, None, id="underscore"),
            pytest.param("bytes=0-" + "9" * 21, SIZE, None, id="hugeLast"),
            pytest.param("bytes=" + "1" * 21 + "-", SIZE, None, id="hugeFirst"),
            pytest.param("bytes=-" + "9" * 5000, SIZE, None, id="enormousSuffix"),
            pytest.param(
                "bytes=0-" + "9" * 20, SIZE, ranges((0, 9999)), id="longButAllowed"
            ),
            pytest.param("bytes=0-1", SIZE, ranges((0, 1)), id="lowerUnit"),
            pytest.param("BYTES=0-1", SIZE, ranges((0, 1)), id="upperUnit"),
            pytest.param("Bytes=0-1", SIZE, ranges((0, 1)), id="mixedUnit"),
            pytest.param(
                "bytes=0-1 , 2-3,\t4-5 ,6-7",
                SIZE,
                ranges((0, 1), (2, 3), (4, 5), (6, 7)),
                id="whitespaceAroundCommas",
            ),
            pytest.param(
                "bytes=0-1,,2-3", SIZE, ranges((0, 1), (2, 3)), id="emptyElement"
            ),
            pytest.param(
                "bytes=, 0-1,", SIZE, ranges((0, 1)), id="leadingTrailingElements"
            ),
            pytest.param(" bytes=0-1\t", SIZE, ranges((0, 1)), id="fieldWhitespace"),
            pytest.param("bytes=0-", 0, UNSATISFIABLE, id="emptyFileOpen"),
            pytest.param("bytes=0-0", 0, UNSATISFIABLE, id="emptyFileFirst"),
            pytest.param("bytes=-1", 0, UNSATISFIABLE, id="emptyFileSuffix"),
            pytest.param("bytes=a-", 0, None, id="emptyFileMalformed"),
            pytest.param("bytes=-5", 1, ranges((0, 0)), id="oneByteFile"),
            pytest.param(None, SIZE, None, id="noHeader"),
        ],
    )
    def test_table(self, header: str | None, size: int, expected: Expected) -> None:
        """
        L{parseRange} clips each range spec to the file and keeps the
        satisfiable ones in order; it answers L{UNSATISFIABLE} when none is
        satisfiable, and L{None} (ignore the header) when the header is
        absent, malformed, of another unit, has too many specs, or asks for
        several ranges larger together than the file.
        """
        assert asPairs(parseRange(header, size)) == expected

    def test_maxRanges(self) -> None:
        """
        C{maxRanges} sets how many range specs are accepted.
        """
        header = "bytes=0-0,2-2,4-4"
        assert asPairs(parseRange(header, SIZE, maxRanges=3)) == [
            (0, 0),
            (2, 2),
            (4, 4),
        ]
        assert parseRange(header, SIZE, maxRanges=2) is None

    def test_negativeSize(self) -> None:
        """
        A negative file size is a mistake of the caller's, and says so.
        """
        with pytest.raises(ValueError, match="negative"):
            parseRange("bytes=0-", -1)

    def test_unsatisfiableIsSingleton(self) -> None:
        """
        L{UNSATISFIABLE} is the one value of L{Unsatisfiable}.
        """
        assert list(Unsatisfiable) == [UNSATISFIABLE]
        assert repr(UNSATISFIABLE) == "UNSATISFIABLE"
        assert parseRange("bytes=-0", 5) is UNSATISFIABLE


class ByteRangeTests:
    @pytest.mark.parametrize(
        ("start", "stop", "size", "expected"),
        [
            (0, 500, 1234, "bytes 0-499/1234"),
            (0, 1, 1, "bytes 0-0/1"),
            (9999, 10000, 10000, "bytes 9999-9999/10000"),
        ],
    )
    def test_contentRange(
        self, start: int, stop: int, size: int, expected: str
    ) -> None:
        """
        L{ByteRange.contentRange} gives the inclusive first and last offsets
        and the file size.
        """
        assert ByteRange(start, stop).contentRange(size) == expected

    @pytest.mark.parametrize(("start", "stop"), [(-1, 5), (5, 5), (5, 4)])
    def test_empty(self, start: int, stop: int) -> None:
        """
        A L{ByteRange} cannot be empty or start before the file.
        """
        with pytest.raises(ValueError):
            ByteRange(start, stop)

    def test_frozen(self) -> None:
        """
        A L{ByteRange} cannot be changed, and equals another of the same
        offsets.
        """
        byteRange = ByteRange(0, 1)
        with pytest.raises(AttributeError):
            byteRange.start = 1  # type: ignore[misc]  # a frozen field, assigned to show it raises
        assert byteRange == ByteRange(0, 1)
        assert hash(byteRange) == hash(ByteRange(0, 1))


numbers = st.one_of(
    st.integers(0, 20),
    st.integers(0, 10**13),
    st.integers(0, 10**25),
).map(str) | st.sampled_from(["", "+1", "-1", " 1", "1 ", "a", "\u0661", "0x1", "1_0"])

specs = st.one_of(
    st.tuples(numbers, numbers).map("-".join),
    numbers.map(lambda n: n + "-"),
    numbers.map(lambda n: "-" + n),
    st.text(max_size=4),
)


@st.composite
def nearValidHeaders(draw: st.DrawFn) -> str:
    """
    Headers that are, or are nearly, well-formed C{bytes} range sets.
    """
    unit = draw(st.sampled_from(["bytes=", "BYTES=", "bytes= ", "bytes =", "x="]))
    elements = draw(st.lists(specs, max_size=2 * MAX_RANGES))
    separators = st.sampled_from([",", ", ", " ,", ",,", "\t,\t", ";"])
    header = unit
    for index, element in enumerate(elements):
        if index:
            header += draw(separators)
        header += element
    return header


sizes = st.one_of(st.integers(0, 30), st.integers(0, 10**12))


class ParseRangePropertyTests:
    def check(self, header: str, size: int) -> None:
        result = parseRange(header, size)
        if result is None or result is UNSATISFIABLE:
            return
        assert isinstance(result, list)
        assert 1 <= len(result) <= MAX_RANGES
        for byteRange in result:
            assert 0 <= byteRange.start < byteRange.stop <= size
        if len(result) > 1:
            assert sum(r.stop - r.start for r in result) <= size

    @given(st.text(), sizes)
    def test_anyText(self, header: str, size: int) -> None:
        """
        For any text, L{parseRange} does not raise, and what it returns is
        at most L{MAX_RANGES} ranges within the file.
        """
        self.check(header, size)

    @given(nearValidHeaders(), sizes)
    def test_nearValid(self, header: str, size: int) -> None:
        """
        For headers that are nearly well-formed, with numbers small and
        huge, L{parseRange} does not raise; the ranges it returns lie within
        the file, number at most L{MAX_RANGES}, and together (if several)
        are no larger than the file.
        """
        self.check(header, size)

    @given(
        st.lists(
            st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
            min_size=1,
            max_size=MAX_RANGES,
        ),
        st.integers(1, 10**6),
    )
    def test_wellFormed(self, pairs: list[tuple[int, int]], size: int) -> None:
        """
        For well-formed C{first-last} specs, each satisfiable spec gives one
        range, in order, clipped to the file; the header is ignored only if
        those ranges add up to more than the file.
        """
        pairs = [(min(a, b), max(a, b)) for a, b in pairs]
        header = "bytes=" + ",".join(f"{a}-{b}" for a, b in pairs)
        expected = [(a, min(b, size - 1)) for a, b in pairs if a < size]
        result = asPairs(parseRange(header, size))
        if not expected:
            assert result is UNSATISFIABLE
        elif len(expected) > 1 and sum(b - a + 1 for a, b in expected) > size:
            assert result is None
        else:
            assert result == expected
