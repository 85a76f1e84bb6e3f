"""
Tests for L{twisted_zero._paths}.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import socket
import stat
import sys
import threading
from pathlib import Path
from typing import Literal
from urllib.parse import quote_from_bytes

import pytest
from attrs import frozen
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_zero._paths import NotFound, Resolved, listUnderRoot, resolveUnderRoot

REASONS = {"bad path", "hidden", "outside the root", "not found", "not a regular file"}


@frozen
class Tree:
    """
    A served root and, beside it, a directory that must never be reachable.

    @ivar base: The directory holding both.
    @ivar root: The served root, already passed through C{os.path.realpath}.
    @ivar outside: The sibling directory outside the root.
    """

    base: str
    root: str
    outside: str


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    base = Path(os.path.realpath(tmp_path_factory.mktemp("paths")))
    root = base / "root"
    outside = base / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"outside secret\n")
    (root / "index.html").write_bytes(b"<p>hello</p>\n")
    (root / "a b.txt").write_bytes(b"space\n")
    (root / "dir").mkdir()
    (root / "dir" / "inner.txt").write_bytes(b"inner\n")
    (root / "\u00fcn\u00efcode.txt").write_bytes(b"unicode\n")
    (root / ".secret").write_bytes(b"hidden\n")
    (root / ".hiddendir").mkdir()
    (root / ".hiddendir" / "x").write_bytes(b"x\n")
    (root / "inside-link").symlink_to("dir/inner.txt")
    (root / "dir-link").symlink_to("dir")
    (root / "escape-link").symlink_to(outside / "secret.txt")
    (root / "escape-dir").symlink_to(outside)
    (root / "link-to-hidden").symlink_to(".secret")
    (root / "dangling-link").symlink_to("does-not-exist")
    (root / "loop-link").symlink_to("loop-link")
    os.mkfifo(root / "fifo")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(root / "socket"))
    return Tree(base=str(base), root=str(root), outside=str(outside))


def assertInside(tree: Tree, resolved: Resolved, dotfiles: bool) -> None:
    """
    C{resolved} is a real path inside the root whose kind and relative path
    agree with the filesystem.
    """
    assert os.path.isabs(resolved.path)
    assert os.path.commonpath([tree.root, resolved.path]) == tree.root
    assert os.path.realpath(resolved.path) == resolved.path
    mode = os.stat(resolved.path).st_mode
    if resolved.kind == "directory":
        assert stat.S_ISDIR(mode)
    else:
        assert resolved.kind == "file"
        assert stat.S_ISREG(mode)
    expected = (
        os.path.join(tree.root, resolved.relative) if resolved.relative else tree.root
    )
    assert expected == resolved.path
    if not dotfiles:
        assert not any(part.startswith(".") for part in resolved.relative.split("/"))


def assertSafeFailure(tree: Tree, exc: NotFound) -> None:
    """
    C{exc} carries one of the generic reasons, mentions no filesystem path
    and drags no other exception (whose message could) along with it.
    """
    message = str(exc)
    assert message in REASONS
    assert tree.base not in message
    assert tree.root not in message
    assert "/" not in message
    assert exc.__cause__ is None
    assert exc.__context__ is None


def checkProperty(tree: Tree, rawPath: bytes, dotfiles: bool) -> None:
    """
    C{rawPath} either raises a safe L{NotFound} or resolves inside the root.
    Any other exception propagates and fails the calling test.
    """
    try:
        resolved = resolveUnderRoot(tree.root, rawPath, dotfiles=dotfiles)
    except NotFound as exc:
        assertSafeFailure(tree, exc)
    else:
        assertInside(tree, resolved, dotfiles)


class ResolveUnderRootTests:
    @pytest.mark.parametrize(
        ("rawPath", "kind", "relative"),
        [
            (b"", "directory", ""),
            (b"/", "directory", ""),
            (b"/index.html", "file", "index.html"),
            (b"index.html", "file", "index.html"),
            (b"/a%20b.txt", "file", "a b.txt"),
            (b"/a b.txt", "file", "a b.txt"),
            (b"/%61%20%62.txt", "file", "a b.txt"),
            (b"/dir/", "directory", "dir"),
            (b"/dir", "directory", "dir"),
            (b"/dir/inner.txt", "file", "dir/inner.txt"),
            (b"/%C3%BCn%C3%AFcode.txt", "file", "\u00fcn\u00efcode.txt"),
            (b"/inside-link", "file", "dir/inner.txt"),
            (b"/dir-link/inner.txt", "file", "dir/inner.txt"),
            (b"/dir-link/", "directory", "dir"),
        ],
    )
    def test_servable(
        self,
        tree: Tree,
        rawPath: bytes,
        kind: Literal["file", "directory"],
        relative: str,
    ) -> None:
        """
        Files, directories and symlinks that stay inside the root resolve to
        their real path, their kind and their real path relative to the root.
        """
        resolved = resolveUnderRoot(tree.root, rawPath)
        expected = os.path.join(tree.root, relative) if relative else tree.root
        assert resolved == Resolved(path=expected, kind=kind, relative=relative)
        assertInside(tree, resolved, dotfiles=False)

    @pytest.mark.parametrize(
        ("rawPath", "relative"),
        [
            (b"/.secret", ".secret"),
            (b"/%2esecret", ".secret"),
            (b"/.hiddendir/x", ".hiddendir/x"),
            (b"/link-to-hidden", ".secret"),
        ],
    )
    def test_dotfilesAllowed(self, tree: Tree, rawPath: bytes, relative: str) -> None:
        """
        With C{dotfiles=True}, hidden names, and symlinks to them, resolve.
        """
        resolved = resolveUnderRoot(tree.root, rawPath, dotfiles=True)
        assert resolved == Resolved(
            path=os.path.join(tree.root, relative), kind="file", relative=relative
        )

    @pytest.mark.parametrize(
        "rawPath", [b"/..", b"/.", b"/%2e%2e/", b"/.hiddendir/..", b"/escape-link"]
    )
    def test_dotfilesStillConfined(self, tree: Tree, rawPath: bytes) -> None:
        """
        C{dotfiles=True} allows hidden names but never C{.} or C{..} segments
        or symlinks leading outside the root.
        """
        with pytest.raises(NotFound) as info:
            resolveUnderRoot(tree.root, rawPath, dotfiles=True)
        assert str(info.value) in {"bad path", "outside the root"}

    def test_rootIsFilesystemRoot(self, tree: Tree) -> None:
        """
        A root of C{/} serves the whole tree, with relative paths that have no
        leading slash.
        """
        assert resolveUnderRoot("/", b"/") == Resolved(
            path="/", kind="directory", relative=""
        )
        rawPath = quote_from_bytes(os.fsencode(tree.root) + b"/index.html").encode()
        resolved = resolveUnderRoot("/", rawPath, dotfiles=True)
        assert resolved.kind == "file"
        assert resolved.relative == tree.root[1:] + "/index.html"
        assert resolved.path == tree.root + "/index.html"

    def test_fifoDoesNotHang(self, tree: Tree) -> None:
        """
        A FIFO with no writer is refused as not a regular file without
        blocking, because nothing is opened.
        """
        outcome: list[BaseException] = []

        def resolve() -> None:
            try:
                resolveUnderRoot(tree.root, b"/fifo")
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=resolve, daemon=True)
        thread.start()
        thread.join(10)
        assert not thread.is_alive(), "resolveUnderRoot blocked on a FIFO"
        assert len(outcome) == 1
        assert isinstance(outcome[0], NotFound)
        assert str(outcome[0]) == "not a regular file"

    def test_opensNothing(self, tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Resolving files, directories, FIFOs, sockets and hostile paths never
        opens anything.
        """

        def refuse(*args: object, **kwargs: object) -> object:
            raise AssertionError("resolveUnderRoot opened something")

        rawPaths = [b"/", b"/index.html", b"/fifo", b"/socket", b"/escape-link"]
        with monkeypatch.context() as patch:
            patch.setattr(os, "open", refuse)
            patch.setattr(builtins, "open", refuse)
            patch.setattr(os, "scandir", refuse)
            patch.setattr(os, "listdir", refuse)
            for rawPath in rawPaths:
                with contextlib.suppress(NotFound):
                    resolveUnderRoot(tree.root, rawPath)

    def test_statFailureIsNotFound(
        self, tree: Tree, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """
        A permission error from C{stat} is reported as C{"not found"}, without
        the path the C{OSError} carried.
        """

        def denied(path: str, *args: object, **kwargs: object) -> os.stat_result:
            raise PermissionError(13, "Permission denied", path)

        with monkeypatch.context() as patch:
            patch.setattr(os, "stat", denied)
            with pytest.raises(NotFound) as info:
                resolveUnderRoot(tree.root, b"/index.html")
        assert str(info.value) == "not found"
        assertSafeFailure(tree, info.value)

    def test_longSymlinkChain(self, tmp_path: Path) -> None:
        """
        A chain of symlinks longer than Python's recursion limit either
        resolves to its target or is not found; it raises nothing else.
        """
        root = os.path.realpath(tmp_path)
        (tmp_path / "target").write_bytes(b"end\n")
        previous = "target"
        length = sys.getrecursionlimit() + 50
        for index in range(length):
            name = f"l{index}"
            (tmp_path / name).symlink_to(previous)
            previous = name
        try:
            resolved = resolveUnderRoot(root, previous.encode())
        except NotFound as exc:
            assert str(exc) == "not found"
            assert exc.__context__ is None
        else:
            assert resolved.relative == "target"


# (raw path, reason with dotfiles=False)
HOSTILE: list[tuple[bytes, str]] = [
    (b"..", "bad path"),
    (b"/..", "bad path"),
    (b"/../", "bad path"),
    (b"/../outside/secret.txt", "bad path"),
    (b"%2e%2e/", "bad path"),
    (b"/%2e%2e/outside/secret.txt", "bad path"),
    (b"%2E%2E%2F", "bad path"),
    (b"..%2f", "bad path"),
    (b"..%5c", "bad path"),
    (b"%2e%2e%5c", "bad path"),
    (b".%2e/", "bad path"),
    (b"%2e./", "bad path"),
    (b"/.%2E/outside", "bad path"),
    (b"/%2e%2E/", "bad path"),
    (b"/%2e", "bad path"),
    (b"....//", "bad path"),
    (b"..;/", "hidden"),
    (b"..%252f", "hidden"),
    (b"/dir/../../", "bad path"),
    (b"/dir/../index.html", "bad path"),
    (b"/dir/%2e%2e/%2e%2e/", "bad path"),
    (b"/dir/%2e%2e%2f%2e%2e%2f", "bad path"),
    (b"/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd", "bad path"),
    (b"%252e%252e/", "not found"),
    (b"/%252e%252e/outside/secret.txt", "not found"),
    (b"/%00", "bad path"),
    (b"/\x00", "bad path"),
    (b"/..%00/", "bad path"),
    (b"/index.html%00.txt", "bad path"),
    (b"\\..\\", "bad path"),
    (b"/..\\..\\", "bad path"),
    (b"/dir/\\", "bad path"),
    (b"\\\\server\\share", "bad path"),
    (b"/C:/Windows", "bad path"),
    (b"/c:%5cwindows", "bad path"),
    (b"/dir/D:secret", "bad path"),
    (b"//etc/passwd", "bad path"),
    (b"/etc/passwd", "not found"),
    (b"%2Fetc%2Fpasswd", "bad path"),
    (b"/%2F", "bad path"),
    (b"/escape-dir%2fsecret.txt", "bad path"),
    (b"/dir/inner.txt%2f..%2f..%2f", "bad path"),
    (b"/escape-link", "outside the root"),
    (b"/escape-dir", "outside the root"),
    (b"/escape-dir/", "outside the root"),
    (b"/escape-dir/secret.txt", "outside the root"),
    (b"/escape-dir/.", "bad path"),
    (b"/link-to-hidden", "hidden"),
    (b"/.secret", "hidden"),
    (b"/%2esecret", "hidden"),
    (b"/.hiddendir/x", "hidden"),
    (b"/.hiddendir/", "hidden"),
    (b"/dir/.", "bad path"),
    (b"/./index.html", "bad path"),
    (b"/" + b"a/" * 2100, "bad path"),
    (b"/" + b"%2e" * 1366, "bad path"),
    (b"/" + b"a" * 256, "bad path"),
    (b"/" + b"%C3%BC" * 128, "bad path"),
    (b"/%ff%fe", "bad path"),
    (b"/%C0%AE%C0%AE/", "bad path"),
    (b"/..%c0%af", "bad path"),
    (b"/%ED%A0%80", "bad path"),
    (b"/fifo", "not a regular file"),
    (b"/socket", "not a regular file"),
    (b"/..%2f..%2f..%2fdev%2fnull", "bad path"),
    (b"/dir//inner.txt", "bad path"),
    (b"/%E2%80%A4%E2%80%A4/", "not found"),
    (b"/%E2%80%A4%E2%80%A4/outside/secret.txt", "not found"),
    (b"/%EF%BC%8E%EF%BC%8E/", "not found"),
    (b"/%u002e%u002e/", "not found"),
    (b"/index.html/x", "not found"),
    (b"/dangling-link", "not found"),
    (b"/loop-link", "not found"),
    (b"~/", "not found"),
]


class TraversalTests:
    def test_corpusIsLarge(self) -> None:
        """
        The hostile corpus holds at least 40 distinct paths.
        """
        rawPaths = [rawPath for rawPath, _ in HOSTILE]
        assert len(set(rawPaths)) == len(rawPaths) >= 40

    @pytest.mark.parametrize(("rawPath", "reason"), HOSTILE)
    def test_refused(self, tree: Tree, rawPath: bytes, reason: str) -> None:
        """
        Each hostile path raises L{NotFound} with the expected generic
        reason, which mentions no filesystem path.
        """
        with pytest.raises(NotFound) as info:
            resolveUnderRoot(tree.root, rawPath)
        assert str(info.value) == reason
        assertSafeFailure(tree, info.value)

    def test_corpusNeverLeavesRoot(self, tree: Tree) -> None:
        """
        With or without dotfiles, no path in the hostile corpus resolves to
        anything outside the root, and the sibling directory's secret is
        never reached.
        """
        secret = os.path.join(tree.outside, "secret.txt")
        for rawPath, _ in HOSTILE:
            for dotfiles in (False, True):
                try:
                    resolved = resolveUnderRoot(tree.root, rawPath, dotfiles=dotfiles)
                except NotFound as exc:
                    assertSafeFailure(tree, exc)
                else:
                    assertInside(tree, resolved, dotfiles)
                    assert resolved.path != secret
                    assert not resolved.path.startswith(tree.outside)


# Fragments that, combined, exercise traversal, encoding and the fixture's
# symlinks.
FRAGMENTS = [
    "",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "\\",
    "%00",
    "%25",
    "%ff",
    "C:",
    "dir",
    "dir-link",
    "inner.txt",
    "index.html",
    "inside-link",
    "escape-link",
    "escape-dir",
    "link-to-hidden",
    "loop-link",
    "outside",
    "secret.txt",
    ".secret",
    ".hiddendir",
    "x",
    "fifo",
    "socket",
]


class PropertyTests:
    @given(rawPath=st.binary(max_size=600), dotfiles=st.booleans())
    def test_arbitraryBytes(self, tree: Tree, rawPath: bytes, dotfiles: bool) -> None:
        """
        For any bytes, L{resolveUnderRoot} raises L{NotFound} or returns a
        path inside the root whose kind matches C{os.stat}.
        """
        checkProperty(tree, rawPath, dotfiles)

    @given(text=st.text(), safe=st.sampled_from(["/", ""]), dotfiles=st.booleans())
    def test_arbitraryEncodedText(
        self, tree: Tree, text: str, safe: str, dotfiles: bool
    ) -> None:
        """
        For any percent-encoded text, L{resolveUnderRoot} raises L{NotFound}
        or returns a path inside the root whose kind matches C{os.stat}.
        """
        rawPath = quote_from_bytes(text.encode("utf-8", "surrogatepass"), safe=safe)
        checkProperty(tree, rawPath.encode("ascii"), dotfiles)

    @settings(max_examples=500)
    @given(
        fragments=st.lists(
            st.sampled_from(FRAGMENTS)
            | st.lists(st.sampled_from(FRAGMENTS), min_size=2, max_size=3).map("".join),
            max_size=5,
        ),
        leading=st.sampled_from(["", "/", "//"]),
        trailing=st.sampled_from(["", "/"]),
        dotfiles=st.booleans(),
    )
    def test_hostileCombinations(
        self,
        tree: Tree,
        fragments: list[str],
        leading: str,
        trailing: str,
        dotfiles: bool,
    ) -> None:
        """
        Any combination of traversal fragments, encodings and the tree's
        symlinks raises L{NotFound} or resolves inside the root.
        """
        rawPath = leading + "/".join(fragments) + trailing
        checkProperty(tree, rawPath.encode("utf-8"), dotfiles)


class ListingTests:
    def test_bounded(self, tmp_path: Path) -> None:
        """
        A listing reads the directory only until it has the most entries it
        shows, and says there are more.
        """
        for index in range(30):
            (tmp_path / f"f{index:02}").write_bytes(b"")
        directory = resolveUnderRoot(str(tmp_path), b"/")
        listing = listUnderRoot(str(tmp_path), directory, limit=10)
        assert len(listing.entries) == 10
        assert listing.truncated
        assert listing.entries == sorted(listing.entries)
        whole = listUnderRoot(str(tmp_path), directory, limit=30)
        assert (len(whole.entries), whole.truncated) == (30, False)

    def test_symlinks(self, tmp_path: Path) -> None:
        """
        Symlinks are listed where they lead inside the root, as what they
        lead to; names a request cannot spell are left out.
        """
        root = tmp_path / "root"
        (root / "dir").mkdir(parents=True)
        (root / "file").write_bytes(b"")
        (root / "to-dir").symlink_to(root / "dir")
        (root / "to-file").symlink_to(root / "file")
        (root / "dangling").symlink_to(root / "nope")
        (root / "out").symlink_to(tmp_path)
        (root / "back\\slash").write_bytes(b"")
        (root / "%41").write_bytes(b"")
        listing = listUnderRoot(str(root), resolveUnderRoot(str(root), b""))
        assert listing.entries == [
            ("%41", False),
            ("dir", True),
            ("file", False),
            ("to-dir", True),
            ("to-file", False),
        ]

    def test_unreadable(self, tmp_path: Path) -> None:
        """
        A directory that cannot be read is not found.
        """
        directory = resolveUnderRoot(str(tmp_path), b"")
        os.rmdir(tmp_path)
        with pytest.raises(NotFound):
            listUnderRoot(str(tmp_path), directory)
