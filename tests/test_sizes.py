"""
Tests for L{twisted_zero._sizes}: sizes as a person writes them.
"""

from __future__ import annotations

import pytest

from twisted_zero import (
    parseSize,
)


class ParseSizeTests:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("0", 0),
            ("1", 1),
            ("65536", 65536),
            ("64K", 65536),
            ("64k", 65536),
            ("64KiB", 65536),
            ("64KB", 65536),
            ("1M", 2**20),
            ("1.5M", 3 * 2**19),
            ("2G", 2 * 2**30),
            ("1T", 2**40),
            (" 7 ", 7),
        ],
    )
    def test_valid(self, text: str, expected: int) -> None:
        """
        Whole byte counts and K/M/G/T binary suffixes are accepted.
        """
        assert parseSize(text) == expected

    @pytest.mark.parametrize(
        "text", ["", "K", "-1", "1.5", "1X", "1e6", "ten", "1 M B", "0x10", "1..5M"]
    )
    def test_invalid(self, text: str) -> None:
        """
        Anything else is refused with a message that quotes the input.
        """
        with pytest.raises(ValueError, match="not a"):
            parseSize(text)
