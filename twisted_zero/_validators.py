"""
Validators and conditional requests: entity tags, HTTP dates and the
evaluation of C{If-*} request headers (RFC 9110 sections 8.8 and 13).

Pure parsing and comparison: nothing here does I/O or imports Twisted.
"""

from __future__ import annotations

import calendar
import datetime
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import TypeAlias

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)
_MONTHS = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)

_DAY = "(?:" + "|".join(_DAYS) + ")"
_LONG_DAY = "(?:" + "|".join(_LONG_DAYS) + ")"
_MONTH = "(?P<month>" + "|".join(_MONTHS) + ")"
_TIME = "(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"

_IMF_FIXDATE = re.compile(
    rf"{_DAY}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT",
    re.ASCII | re.IGNORECASE,
)
"""C{Sun, 06 Nov 1994 08:49:37 GMT}: the preferred form."""

_RFC850_DATE = re.compile(
    rf"{_LONG_DAY}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<shortYear>[0-9]{{2}})"
    rf" {_TIME} GMT",
    re.ASCII | re.IGNORECASE,
)
"""C{Sunday, 06-Nov-94 08:49:37 GMT}: obsolete, with a two-digit year."""

_ASCTIME_DATE = re.compile(
    rf"{_DAY} {_MONTH} (?P<day> ?[0-9]|[0-9]{{2}}) {_TIME} (?P<year>[0-9]{{4}})",
    re.ASCII | re.IGNORECASE,
)
"""C{Sun Nov  6 08:49:37 1994}: obsolete, C{asctime()}'s form."""

_ENTITY_TAG = re.compile(r'(?P<weak>W/)?(?P<opaque>"[\x21\x23-\x7e\x80-\xff]*")')
"""An entity-tag: an optional C{W/} and a quoted opaque tag without escapes."""

_OWS = " \t"

_EntityTag: TypeAlias = tuple[bool, str]
"""A parsed entity-tag: whether it is weak, and its opaque tag with quotes."""


def makeETag(size: int, mtimeNs: int, inode: int) -> str:
    """
    Make a strong entity tag for a file from what C{stat} says of it.

    @param size: The file's size in bytes (C{st_size}), not negative.
    @param mtimeNs: Its modification time in nanoseconds (C{st_mtime_ns}).
    @param inode: Its inode number (C{st_ino}), not negative.
    @return: The three numbers in hexadecimal, joined by C{-} and quoted,
        for example C{'"3f-5f1a2b3c4d-1a2b"'}; different whenever any of
        them differs.
    """
    return f'"{size:x}-{mtimeNs:x}-{inode:x}"'


def httpDate(timestamp: float) -> str:
    """
    Format a time as an HTTP date in the preferred form (IMF-fixdate).

    @param timestamp: Seconds since the epoch; the fraction is dropped
        (rounding down).
    @return: For example C{"Sun, 06 Nov 1994 08:49:37 GMT"}.
    @raise ValueError: If C{timestamp} is not a number.
    @raise OverflowError: If it is outside the years 1 to 9999.
    """
    epoch = datetime.datetime(1970, 1, 1)
    when = epoch + datetime.timedelta(seconds=math.floor(timestamp))
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]}"
        f" {when.year:04d} {when.hour:02d}:{when.minute:02d}:{when.second:02d} GMT"
    )


def _currentYear() -> int:
    return time.gmtime().tm_year


def _parseHTTPDate(value: str, currentYear: Callable[[], int]) -> int | None:
    """
    Parse an HTTP date, given how to learn the current year.

    @param currentYear: Returns the current year (in UTC), for interpreting
        the two-digit years of RFC 850 dates; called only for those.
    @return: See L{parseHTTPDate}.
    """
    value = value.strip(_OWS)
    match = _IMF_FIXDATE.fullmatch(value) or _ASCTIME_DATE.fullmatch(value)
    if match is not None:
        year = int(match["year"])
    else:
        match = _RFC850_DATE.fullmatch(value)
        if match is None:
            return None
        # RFC 9110 section 5.6.7: a two-digit year more than 50 years in the
        # future is the most recent past year with the same last two digits;
        # so it is the latest year with those digits at most 50 years ahead.
        latest = currentYear() + 50
        year = latest - (latest - int(match["shortYear"])) % 100
    month = _MONTHS.index(match["month"].capitalize()) + 1
    day = int(match["day"])
    hour, minute = int(match["hour"]), int(match["minute"])
    second = int(match["second"])
    if not 1 <= year <= 9999 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    # A second of 60 is a leap second (RFC 5322); it counts as the next one.
    if hour > 23 or minute > 59 or second > 60:
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def parseHTTPDate(value: str) -> int | None:
    """
    Parse an HTTP date (RFC 9110 section 5.6.7) in any of its three forms:
    IMF-fixdate (C{Sun, 06 Nov 1994 08:49:37 GMT}), RFC 850 (C{Sunday,
    06-Nov-94 08:49:37 GMT}) or C{asctime} (C{Sun Nov  6 08:49:37 1994}).

    Names of days and months are matched regardless of case; whether the
    day of the week is the right one is not checked. A two-digit year is
    read relative to the current year, as RFC 9110 requires.

    @param value: The field value, decoded as latin-1.
    @return: Seconds since the epoch, or L{None} if C{value} is not a valid
        HTTP date. Never raises.
    """
    return _parseHTTPDate(value, _currentYear)


def _parseEntityTag(value: str) -> _EntityTag | None:
    match = _ENTITY_TAG.fullmatch(value.strip(_OWS))
    if match is None:
        return None
    return (match["weak"] is not None, match["opaque"])


def _parseEntityTags(value: str) -> list[_EntityTag]:
    """
    Parse a comma-separated list of entity-tags (C{#entity-tag}).

    @return: The tags in order; none at all if the list is malformed.
    """
    tags: list[_EntityTag] = []
    position, end = 0, len(value)
    while True:
        while position < end and value[position] in _OWS:
            position += 1
        if position == end:
            return tags
        if value[position] == ",":
            # An empty list element.
            position += 1
            continue
        match = _ENTITY_TAG.match(value, position)
        if match is None:
            return []
        tags.append((match["weak"] is not None, match["opaque"]))
        position = match.end()
        while position < end and value[position] in _OWS:
            position += 1
        if position == end:
            return tags
        if value[position] != ",":
            return []
        position += 1


def _strongMatch(tag: _EntityTag, etag: _EntityTag | None) -> bool:
    """
    Strong comparison: both tags strong, and their opaque tags the same.
    """
    return etag is not None and not tag[0] and not etag[0] and tag[1] == etag[1]


def _weakMatch(tag: _EntityTag, etag: _EntityTag | None) -> bool:
    """
    Weak comparison: the opaque tags the same, whether or not either is weak.
    """
    return etag is not None and tag[1] == etag[1]


def _isStar(value: str) -> bool:
    return value.strip(_OWS) == "*"


def evaluatePreconditions(
    method: str, headers: Mapping[str, str], etag: str, lastModified: int
) -> int | None:
    """
    Evaluate a request's preconditions against a resource that exists, in
    the order of RFC 9110 section 13.2.2.

        1. C{If-Match}, if present, fails (412) unless it is C{*} or lists
           an entity-tag that strongly matches C{etag}.
        2. Otherwise C{If-Unmodified-Since}, if a valid date, fails (412)
           when the resource was modified after it.
        3. C{If-None-Match}, if present, fails when it is C{*} or lists an
           entity-tag that weakly matches C{etag}: 304 for C{GET} and
           C{HEAD}, 412 for any other method.
        4. Otherwise, for C{GET} and C{HEAD}, C{If-Modified-Since}, if a
           valid date, fails (304) unless the resource was modified after it.

    A malformed list of entity-tags lists none; a malformed date is ignored.

    @param method: The request method, such as C{"GET"} (case-sensitive).
    @param headers: Request header values, decoded as latin-1, by lower-case
        name: C{if-match}, C{if-none-match}, C{if-modified-since},
        C{if-unmodified-since}.
    @param etag: The resource's current entity tag, such as L{makeETag}
        makes.
    @param lastModified: The resource's modification time in whole seconds
        since the epoch.
    @return: The status code to answer with (304 or 412), or L{None} to
        carry on with the request. Never raises.
    """
    current = _parseEntityTag(etag)
    safe = method in ("GET", "HEAD")

    ifMatch = headers.get("if-match")
    if ifMatch is not None:
        if not _isStar(ifMatch) and not any(
            _strongMatch(tag, current) for tag in _parseEntityTags(ifMatch)
        ):
            return 412
    else:
        ifUnmodifiedSince = headers.get("if-unmodified-since")
        if ifUnmodifiedSince is not None:
            date = parseHTTPDate(ifUnmodifiedSince)
            if date is not None and lastModified > date:
                return 412

    ifNoneMatch = headers.get("if-none-match")
    if ifNoneMatch is not None:
        if _isStar(ifNoneMatch) or any(
            _weakMatch(tag, current) for tag in _parseEntityTags(ifNoneMatch)
        ):
            return 304 if safe else 412
    elif safe:
        ifModifiedSince = headers.get("if-modified-since")
        if ifModifiedSince is not None:
            date = parseHTTPDate(ifModifiedSince)
            if date is not None and lastModified <= date:
                return 304

    return None


def ifRangeAllowsRange(value: str | None, etag: str, lastModified: int) -> bool:
    """
    Evaluate an C{If-Range} header (RFC 9110 section 13.1.5): may the
    C{Range} header be honoured, or must the whole representation be sent?

    @param value: The C{If-Range} field value, decoded as latin-1, or
        L{None} if the request has none.
    @param etag: The resource's current entity tag.
    @param lastModified: The resource's modification time in whole seconds
        since the epoch.
    @return: C{True} if there is no C{If-Range}, or it is a strong
        entity-tag that strongly matches C{etag}, or an HTTP date equal to
        C{lastModified}; C{False} otherwise (a weak or different
        entity-tag, a different date, or anything malformed). Never raises.
    """
    if value is None:
        return True
    tag = _parseEntityTag(value)
    if tag is not None:
        return _strongMatch(tag, _parseEntityTag(etag))
    return parseHTTPDate(value) == lastModified
