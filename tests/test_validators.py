"""
Tests for L{twisted_zero._validators}: entity tags, HTTP dates and
conditional requests.
"""

from __future__ import annotations

import calendar
import email.utils
import math
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted_zero._validators import (
    _parseHTTPDate,
    evaluatePreconditions,
    httpDate,
    ifRangeAllowsRange,
    makeETag,
    parseHTTPDate,
)

ETAG = '"3f-5f1a2b3c4d-1a2b"'
WEAK = 'W/"3f-5f1a2b3c4d-1a2b"'
OTHER = '"3f-5f1a2b3c4d-1a2c"'

LAST_MODIFIED = 784111777
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
SAME = "Sun, 06 Nov 1994 08:49:37 GMT"
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"

FIRST_YEAR = calendar.timegm((1, 1, 1, 0, 0, 0, 0, 0, 0))
LAST_SECOND = calendar.timegm((9999, 12, 31, 23, 59, 59, 0, 0, 0))

HEADER_NAMES = ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"]


def case(
    method: str, expected: int | None, id: str, **headers: str
) -> pytest.ParameterSet:
    """
    One row of the preconditions table; header names are given with
    underscores (C{if_match}).
    """
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return pytest.param(method, named, expected, id=id)


class EvaluatePreconditionsTests:
    @pytest.mark.parametrize(
        ("method", "headers", "expected"),
        [
            case("GET", None, "noConditions"),
            # 1. If-Match: strong comparison.
            case("GET", None, "ifMatchSame", if_match=ETAG),
            case("PUT", None, "ifMatchSamePut", if_match=ETAG),
            case("GET", None, "ifMatchStar", if_match="*"),
            case("GET", None, "ifMatchStarOWS", if_match=" * "),
            case("GET", 412, "ifMatchOther", if_match=OTHER),
            case("PUT", 412, "ifMatchOtherPut", if_match=OTHER),
            case("GET", 412, "ifMatchWeakNeverMatches", if_match=WEAK),
            case("GET", None, "ifMatchList", if_match=f'"a", {OTHER},{ETAG}'),
            case("GET", None, "ifMatchCommaInTag", if_match=f'"a,b" , {ETAG}'),
            case("GET", None, "ifMatchEmptyElements", if_match=f", ,{ETAG},,"),
            case("GET", 412, "ifMatchUnquoted", if_match="3f-5f1a2b3c4d-1a2b"),
            case("GET", 412, "ifMatchLowerWeak", if_match=ETAG.join(["w/", ""])),
            case("GET", 412, "ifMatchJunkAfter", if_match=f"{ETAG} junk"),
            case("GET", 412, "ifMatchNoComma", if_match=f'"a" {ETAG}'),
            case("GET", 412, "ifMatchMalformedList", if_match=f'{ETAG}, "open'),
            case("GET", 412, "ifMatchStarInList", if_match=f"*, {ETAG}"),
            case("GET", 412, "ifMatchEmpty", if_match=""),
            # 2. If-Unmodified-Since, only without If-Match.
            case("GET", None, "unmodifiedAfter", if_unmodified_since=AFTER),
            case("GET", None, "unmodifiedSame", if_unmodified_since=SAME),
            case("PUT", 412, "unmodifiedBefore", if_unmodified_since=BEFORE),
            case("GET", 412, "unmodifiedBeforeGet", if_unmodified_since=BEFORE),
            case("GET", None, "unmodifiedGarbage", if_unmodified_since="yesterday"),
            case(
                "GET",
                None,
                "ifMatchBeatsUnmodified",
                if_match=ETAG,
                if_unmodified_since=BEFORE,
            ),
            case(
                "GET",
                412,
                "ifMatchFailsDespiteUnmodified",
                if_match=OTHER,
                if_unmodified_since=AFTER,
            ),
            # 3. If-None-Match: weak comparison.
            case("GET", 304, "noneMatchSame", if_none_match=ETAG),
            case("HEAD", 304, "noneMatchSameHead", if_none_match=ETAG),
            case("POST", 412, "noneMatchSamePost", if_none_match=ETAG),
            case("PUT", 412, "noneMatchSamePut", if_none_match=ETAG),
            case("GET", 304, "noneMatchWeak", if_none_match=WEAK),
            case("GET", 304, "noneMatchStar", if_none_match="*"),
            case("POST", 412, "noneMatchStarPost", if_none_match="*"),
            case("GET", None, "noneMatchOther", if_none_match=OTHER),
            case("GET", 304, "noneMatchList", if_none_match=f'W/"x", {WEAK}'),
            case("GET", None, "noneMatchMalformed", if_none_match=f"{ETAG} x"),
            case("GET", None, "noneMatchEmpty", if_none_match=""),
            # 4. If-Modified-Since, only for GET and HEAD without If-None-Match.
            case("GET", 304, "modifiedSame", if_modified_since=SAME),
            case("HEAD", 304, "modifiedSameHead", if_modified_since=SAME),
            case("GET", 304, "modifiedAfter", if_modified_since=AFTER),
            case("GET", None, "modifiedBefore", if_modified_since=BEFORE),
            case("GET", None, "modifiedGarbage", if_modified_since="garbage"),
            case("GET", None, "modifiedTwoDates", if_modified_since=f"{SAME}, {SAME}"),
            case("POST", None, "modifiedPost", if_modified_since=SAME),
            case("get", None, "methodCaseSensitive", if_modified_since=SAME),
            case(
                "GET",
                304,
                "modifiedRFC850",
                if_modified_since="Sunday, 06-Nov-94 08:49:37 GMT",
            ),
            case(
                "GET",
                304,
                "modifiedAsctime",
                if_modified_since="Sun Nov  6 08:49:37 1994",
            ),
            # Precedence.
            case(
                "GET",
                412,
                "ifMatchBeatsNoneMatch",
                if_match=OTHER,
                if_none_match=ETAG,
            ),
            case(
                "GET",
                304,
                "noneMatchAfterIfMatchPasses",
                if_match=ETAG,
                if_none_match=ETAG,
            ),
            case(
                "GET",
                412,
                "unmodifiedBeatsNoneMatch",
                if_unmodified_since=BEFORE,
                if_none_match=ETAG,
            ),
            case(
                "GET",
                None,
                "noneMatchBeatsModifiedSince",
                if_none_match=OTHER,
                if_modified_since=AFTER,
            ),
            case(
                "GET",
                304,
                "noneMatchDecidesAlone",
                if_none_match=ETAG,
                if_modified_since=BEFORE,
            ),
            case(
                "GET",
                None,
                "malformedNoneMatchStillBeatsModifiedSince",
                if_none_match="junk",
                if_modified_since=AFTER,
            ),
        ],
    )
    def test_table(
        self, method: str, headers: dict[str, str], expected: int | None
    ) -> None:
        """
        L{evaluatePreconditions} answers 412 or 304, or L{None} to carry
        on, by the rules and in the order of RFC 9110 section 13.2.2.
        """
        assert evaluatePreconditions(method, headers, ETAG, LAST_MODIFIED) == expected

    def test_otherHeadersIgnored(self) -> None:
        """
        Headers other than the four preconditions make no difference.
        """
        headers = {"range": "bytes=0-1", "if-range": OTHER, "etag": OTHER}
        assert evaluatePreconditions("GET", headers, ETAG, LAST_MODIFIED) is None

    def test_madeETag(self) -> None:
        """
        An entity tag from L{makeETag} matches itself both strongly and
        weakly.
        """
        etag = makeETag(63, 1_700_000_000_123_456_789, 42)
        assert evaluatePreconditions("PUT", {"if-match": etag}, etag, 0) is None
        assert evaluatePreconditions("GET", {"if-none-match": etag}, etag, 0) == 304

    def test_weakCurrentTag(self) -> None:
        """
        A weak current entity tag never matches If-Match (strong
        comparison) but matches If-None-Match (weak comparison).
        """
        assert evaluatePreconditions("GET", {"if-match": WEAK}, WEAK, 0) == 412
        assert evaluatePreconditions("GET", {"if-none-match": ETAG}, WEAK, 0) == 304

    @given(
        st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT"]), st.text()),
        st.dictionaries(st.sampled_from(HEADER_NAMES), st.text()),
        st.text(),
        st.integers(-(2**40), 2**40),
    )
    def test_neverRaises(
        self, method: str, headers: dict[str, str], etag: str, lastModified: int
    ) -> None:
        """
        For any text at all, L{evaluatePreconditions} returns 304, 412 or
        L{None}, and never raises.
        """
        result = evaluatePreconditions(method, headers, etag, lastModified)
        assert result in (None, 304, 412)


class IfRangeAllowsRangeTests:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param(None, True, id="absent"),
            pytest.param(ETAG, True, id="strongMatch"),
            pytest.param(f" {ETAG}\t", True, id="strongMatchOWS"),
            pytest.param(WEAK, False, id="weakTag"),
            pytest.param(OTHER, False, id="otherTag"),
            pytest.param(f"{ETAG}, {ETAG}", False, id="list"),
            pytest.param('"3f-5f1a2b3c4d-1a2b', False, id="unterminatedTag"),
            pytest.param(SAME, True, id="exactDate"),
            pytest.param("Sun Nov  6 08:49:37 1994", True, id="exactAsctime"),
            pytest.param(BEFORE, False, id="earlierDate"),
            pytest.param(AFTER, False, id="laterDate"),
            pytest.param("garbage", False, id="garbage"),
            pytest.param("", False, id="empty"),
            pytest.param("*", False, id="star"),
        ],
    )
    def test_table(self, value: str | None, expected: bool) -> None:
        """
        L{ifRangeAllowsRange} allows ranges without C{If-Range}, or when it
        holds a strong entity tag that strongly matches, or exactly the
        modification date; anything else (weak or other tags, other dates,
        garbage) means sending the whole representation.
        """
        assert ifRangeAllowsRange(value, ETAG, LAST_MODIFIED) is expected

    def test_weakCurrentTag(self) -> None:
        """
        A weak current entity tag never allows ranges, even when equal.
        """
        assert ifRangeAllowsRange(WEAK, WEAK, LAST_MODIFIED) is False

    @given(st.one_of(st.none(), st.text()), st.text(), st.integers())
    def test_neverRaises(self, value: str | None, etag: str, lastModified: int) -> None:
        """
        For any text at all, L{ifRangeAllowsRange} returns a boolean and
        never raises.
        """
        assert isinstance(ifRangeAllowsRange(value, etag, lastModified), bool)


class MakeETagTests:
    def test_format(self) -> None:
        """
        L{makeETag} gives a strong, quoted entity tag of the size,
        modification time and inode in hexadecimal.
        """
        assert makeETag(0x3F, 0x5F1A2B3C4D, 0x1A2B) == ETAG

    @given(st.integers(0, 2**64), st.integers(-(2**70), 2**70), st.integers(0, 2**64))
    def test_strongAndQuoted(self, size: int, mtimeNs: int, inode: int) -> None:
        """
        Every tag is a strong entity-tag: quoted, no C{W/}, and only
        characters allowed in one.
        """
        etag = makeETag(size, mtimeNs, inode)
        assert re.fullmatch(r'"[0-9a-f]+-(-?)[0-9a-f]+-[0-9a-f]+"', etag)

    @pytest.mark.parametrize(
        "changed",
        [(64, 10**18, 7), (63, 10**18 + 1, 7), (63, 10**18, 8)],
        ids=["size", "mtime", "inode"],
    )
    def test_changes(self, changed: tuple[int, int, int]) -> None:
        """
        A change of any one input changes the tag.
        """
        assert makeETag(*changed) != makeETag(63, 10**18, 7)

    @given(
        st.tuples(
            st.integers(0, 2**40), st.integers(-(2**62), 2**62), st.integers(0, 2**40)
        ),
        st.tuples(
            st.integers(0, 2**40), st.integers(-(2**62), 2**62), st.integers(0, 2**40)
        ),
    )
    def test_unique(
        self, one: tuple[int, int, int], other: tuple[int, int, int]
    ) -> None:
        """
        Different inputs, even a modification time before the epoch, never
        give the same tag.
        """
        assert (makeETag(*one) == makeETag(*other)) == (one == other)


class HTTPDateTests:
    @pytest.mark.parametrize(
        ("timestamp", "expected"),
        [
            (784111777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (784111777.999, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (-0.5, "Wed, 31 Dec 1969 23:59:59 GMT"),
            (951782400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (LAST_SECOND, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ],
    )
    def test_format(self, timestamp: float, expected: str) -> None:
        """
        L{httpDate} gives the IMF-fixdate form, dropping fractions of a
        second.
        """
        assert httpDate(timestamp) == expected

    @given(st.integers(0, LAST_SECOND))
    def test_sameAsEmail(self, timestamp: int) -> None:
        """
        L{httpDate} agrees with L{email.utils.formatdate}.
        """
        assert httpDate(timestamp) == email.utils.formatdate(timestamp, usegmt=True)

    @given(
        st.one_of(
            st.integers(FIRST_YEAR, LAST_SECOND),
            st.floats(FIRST_YEAR, LAST_SECOND, allow_nan=False),
        )
    )
    def test_roundTrip(self, timestamp: float) -> None:
        """
        L{parseHTTPDate} reads back what L{httpDate} writes, to the second.
        """
        assert parseHTTPDate(httpDate(timestamp)) == math.floor(timestamp)


class ParseHTTPDateTests:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", id="imfFixdate"),
            pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", id="rfc850"),
            pytest.param("Sun Nov  6 08:49:37 1994", id="asctime"),
            pytest.param("Sun Nov 06 08:49:37 1994", id="asctimeTwoDigits"),
            pytest.param("Sun Nov 6 08:49:37 1994", id="asctimeOneSpace"),
            pytest.param("SUN, 06 NOV 1994 08:49:37 gmt", id="anyCase"),
            pytest.param(" Sun, 06 Nov 1994 08:49:37 GMT\t", id="fieldWhitespace"),
            pytest.param("Mon, 06 Nov 1994 08:49:37 GMT", id="wrongWeekday"),
        ],
    )
    def test_forms(self, value: str) -> None:
        """
        L{parseHTTPDate} reads the three forms of RFC 9110, names in any
        case, without checking the day of the week.
        """
        assert _parseHTTPDate(value, lambda: 2025) == LAST_MODIFIED

    def test_leapSecond(self) -> None:
        """
        A leap second is read as the second after it.
        """
        assert parseHTTPDate("Sun, 06 Nov 1994 08:48:60 GMT") == LAST_MODIFIED - 37

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "784111777",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun,  06 Nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Nov 0000 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
            "\u017fun, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT; length=1234",
            "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
        ],
    )
    def test_invalid(self, value: str) -> None:
        """
        Anything not an HTTP date, or a date that does not exist, is
        L{None}.
        """
        assert parseHTTPDate(value) is None

    @pytest.mark.parametrize(
        ("shortYear", "currentYear", "year"),
        [
            ("94", 2025, 1994),
            ("25", 2025, 2025),
            ("75", 2025, 2075),
            ("76", 2025, 1976),
            ("00", 2025, 2000),
            ("49", 1999, 2049),
            ("50", 1999, 1950),
            ("50", 2000, 2050),
            ("51", 2000, 1951),
            ("99", 2000, 1999),
        ],
    )
    def test_twoDigitYear(self, shortYear: str, currentYear: int, year: int) -> None:
        """
        A two-digit year more than 50 years ahead of the current year is
        read as the most recent past year with the same last two digits.
        """
        value = f"Friday, 01-Jan-{shortYear} 00:00:00 GMT"
        expected = calendar.timegm((year, 1, 1, 0, 0, 0, 0, 0, 0))
        assert _parseHTTPDate(value, lambda: currentYear) == expected

    def test_twoDigitYearNow(self) -> None:
        """
        L{parseHTTPDate} reads two-digit years relative to the current
        year: last year's two digits mean last year.
        """
        year = time.gmtime().tm_year - 1
        value = f"Friday, 01-Jan-{year % 100:02d} 00:00:00 GMT"
        expected = calendar.timegm((year, 1, 1, 0, 0, 0, 0, 0, 0))
        assert parseHTTPDate(value) == expected

    def test_currentYearOnlyForRFC850(self) -> None:
        """
        The current year is not asked for when the date has four digits.
        """

        def currentYear() -> int:
            raise AssertionError("current year asked for")

        assert _parseHTTPDate(SAME, currentYear) == LAST_MODIFIED

    @given(st.text())
    def test_neverRaises(self, value: str) -> None:
        """
        For any text, L{parseHTTPDate} returns seconds or L{None}, and never
        raises.
        """
        result = parseHTTPDate(value)
        assert result is None or isinstance(result, int)

    @given(
        st.sampled_from(["imf", "rfc850", "asctime"]),
        st.integers(0, 99),
        st.sampled_from(["Jan", "Feb", "Nov", "Dec", "xyz"]),
        st.integers(0, 10**4 - 1),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
    )
    def test_nearValid(
        self,
        form: str,
        day: int,
        month: str,
        year: int,
        hour: int,
        minute: int,
        second: int,
    ) -> None:
        """
        For dates of the right shape but any numbers, L{parseHTTPDate}
        never raises, and a date it accepts is one L{httpDate} writes back
        the same (apart from the day of the week and a leap second).
        """
        clock = f"{hour:02d}:{minute:02d}:{second:02d}"
        if form == "imf":
            value = f"Sun, {day:02d} {month} {year:04d} {clock} GMT"
        elif form == "rfc850":
            value = f"Sunday, {day:02d}-{month}-{year % 100:02d} {clock} GMT"
        else:
            value = f"Sun {month} {day:2d} {clock} {year:04d}"
        result = parseHTTPDate(value)
        if result is not None:
            assert 0 <= hour < 24 and 0 <= minute < 60 and 0 <= second <= 60
            assert parseHTTPDate(httpDate(result)) == result
            if second < 60:
                assert httpDate(result)[5:] == (
                    f"{day:02d} {month} {time.gmtime(result).tm_year:04d} {clock} GMT"
                )
