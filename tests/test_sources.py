"""
Tests for L{twisted_zero._sources}: a source by its name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from twisted_zero import (
    ChargenSource,
    RandomSource,
    SourceError,
    ZeroSource,
    sourceFactory,
)

from .helpers import readAll


class SourceFactoryTests:
    @pytest.mark.parametrize(
        ("spec", "kind"),
        [("zero", ZeroSource), ("chargen", ChargenSource), ("random", RandomSource)],
    )
    def test_generated(self, spec: str, kind: type) -> None:
        """
        Each generated source's name gives a factory of fresh sources.
        """
        factory = sourceFactory(spec)
        first, second = factory(), factory()
        assert isinstance(first, kind)
        assert first is not second

    def test_file(self, tmp_path: Path) -> None:
        """
        C{file:PATH} checks the file now and opens it anew per stream.
        """
        path = tmp_path / "data"
        path.write_bytes(b"hello")
        factory = sourceFactory(f"file:{path}")
        first, second = factory(), factory()
        assert readAll(first, [10] * 3) == b"hello"
        assert readAll(second, [10] * 3) == b"hello"
        first.close()
        second.close()

    @pytest.mark.parametrize("spec", ["", "ones", "file:", "FILE:/x", "zero "])
    def test_unknown(self, spec: str) -> None:
        """
        Other names are refused with the list of valid ones.
        """
        with pytest.raises(SourceError, match=r"unknown source .* \(choose one of"):
            sourceFactory(spec)

    def test_badFile(self, tmp_path: Path) -> None:
        """
        C{file:} with a path that is not a readable regular file is refused.
        """
        with pytest.raises(SourceError, match="no such file"):
            sourceFactory(f"file:{tmp_path / 'nope'}")
