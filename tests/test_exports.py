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
from twisted_zero import _resources, _site

PUBLIC = {
    "ChargenSource",
    "ConnectionBroken",
    "FileSource",
    "IBlockingSource",
    "IOPool",
    "IRewindableSource",
    "ISendfileSource",
    "ISharedChunkSource",
    "ISource",
    "PathSource",
    "RandomSource",
    "SourceError",
    "SourceTruncated",
    "StreamFactory",
    "StreamProducer",
    "StreamProtocol",
    "StreamSite",
    "StreamStopped",
    "ZeroSource",
    "__version__",
    "makeResource",
    "openFile",
    "parseSize",
    "requestOutlet",
    "sourceFactory",
    "transportOutlet",
}


def test_all() -> None:
    """
    C{__all__} lists exactly the public names, each importable.
    """
    assert set(twisted_zero.__all__) == PUBLIC
    assert len(twisted_zero.__all__) == len(PUBLIC)
    for name in PUBLIC:
        assert getattr(twisted_zero, name) is not None


def test_version() -> None:
    """
    The version is a dotted string.
    """
    assert all(part.isdigit() for part in twisted_zero.__version__.split("."))


def test_wheel(tmp_path: Path) -> None:
    """
    The built wheel holds the package, its type marker and the twistd
    dropin, and no C{twisted/__init__.py} or C{twisted/plugins/__init__.py}
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
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not [n for n in names if n.startswith("tests/")]


def test_httpNames() -> None:
    """
    The HTTP front end's public names are the objects of the modules that
    define them.
    """
    assert twisted_zero.StreamSite is _site.StreamSite
    assert twisted_zero.makeResource is _resources.makeResource
