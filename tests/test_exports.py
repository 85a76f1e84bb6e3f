"""
The public API is what C{__all__} says, and nothing is missing from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import twisted_zero
from twisted_zero import (
    _filesource,
    _generated,
    _httpoutlet,
    _interfaces,
    _iopool,
    _outlet,
    _producer,
    _protocol,
    _resources,
    _site,
    _sizes,
    _sources,
)

PUBLIC = {
    "ChargenSource": _generated.ChargenSource,
    "ConnectionBroken": _producer.ConnectionBroken,
    "FileSource": _filesource.FileSource,
    "IBlockingSource": _interfaces.IBlockingSource,
    "IOPool": _iopool.IOPool,
    "IRewindableSource": _interfaces.IRewindableSource,
    "ISendfileSource": _interfaces.ISendfileSource,
    "ISharedChunkSource": _interfaces.ISharedChunkSource,
    "ISource": _interfaces.ISource,
    "PathSource": _filesource.PathSource,
    "RandomSource": _generated.RandomSource,
    "SourceError": _interfaces.SourceError,
    "SourceTruncated": _interfaces.SourceTruncated,
    "StreamFactory": _protocol.StreamFactory,
    "StreamProducer": _producer.StreamProducer,
    "StreamProtocol": _protocol.StreamProtocol,
    "StreamSite": _site.StreamSite,
    "StreamStopped": _producer.StreamStopped,
    "ZeroSource": _generated.ZeroSource,
    "makeResource": _resources.makeResource,
    "openFile": _filesource.openFile,
    "parseSize": _sizes.parseSize,
    "requestOutlet": _httpoutlet.requestOutlet,
    "sourceFactory": _sources.sourceFactory,
    "transportOutlet": _outlet.transportOutlet,
}
"""
Each public name, and the object of the module that defines it.
"""


class ExportsTests:
    """
    The public API and the package built from it.
    """

    def test_all(self) -> None:
        """
        C{__all__} lists exactly the public names and the version.
        """
        assert sorted(twisted_zero.__all__) == sorted([*PUBLIC, "__version__"])

    def test_identity(self) -> None:
        """
        Each public name is the very object its defining module has (not a copy
        or a stand-in), and says it is defined there.
        """
        for name, defined in PUBLIC.items():
            assert getattr(twisted_zero, name) is defined, name
            module = defined.__module__
            assert module.startswith("twisted_zero._"), name
            assert getattr(sys.modules[module], name) is defined, name

    def test_version(self) -> None:
        """
        The version is a dotted string.
        """
        assert all(part.isdigit() for part in twisted_zero.__version__.split("."))

    def test_wheel(self, tmp_path: Path) -> None:
        """
        The built wheel holds the package, its type marker, the browser
        page, the C{twisted-zero} command and the twistd dropin, and no C{twisted/__init__.py} or C{twisted/plugins/__init__.py}
        that would clobber Twisted's own.
        """
        project = Path(twisted_zero.__file__).resolve().parent.parent
        source = tmp_path / "source"
        source.mkdir()
        for name in ("setup.cfg", "pyproject.toml", "README.rst"):
            shutil.copy(project / name, source)
        for name in ("twisted_zero", "twisted"):
            shutil.copytree(
                project / name,
                source / name,
                ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"),
            )
        subprocess.run(
            [
                sys.executable, "-m", "pip", "wheel", "--no-deps",
                "--no-build-isolation", "--quiet", "--wheel-dir", str(tmp_path / "dist"),
                str(source),
            ],
            check=True,
            timeout=300,
        )  # fmt: skip
        [wheel] = (tmp_path / "dist").glob("twisted_zero-*.whl")
        names = set(zipfile.ZipFile(wheel).namelist())
        assert "twisted/plugins/twisted_zero_plugin.py" in names
        assert "twisted_zero/__init__.py" in names
        assert "twisted_zero/py.typed" in names
        assert "twisted_zero/page.html" in names
        [entryPoints] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "twisted-zero = twisted_zero._cli:main" in (
            zipfile.ZipFile(wheel).read(entryPoints).decode()
        )
        assert "twisted/__init__.py" not in names
        assert "twisted/plugins/__init__.py" not in names
        assert not [n for n in names if n.startswith("tests/")]
