"""
Map a request path onto a file or directory under a served root, refusing
anything that could reach outside it.

Pure path arithmetic and C{stat}: nothing here opens a file or imports Twisted.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Literal
from urllib.parse import unquote_to_bytes

from attrs import frozen

MAX_PATH = 4096
"""The longest raw (still percent-encoded) request path accepted, in bytes."""

MAX_SEGMENT = 255
"""The longest decoded path segment accepted, in bytes (C{NAME_MAX})."""

_OUTSIDE = "outside the root"
_HIDDEN = "hidden"
_NOT_FOUND = "not found"
_NOT_REGULAR = "not a regular file"
_BAD_PATH = "bad path"

_DRIVE = re.compile(r"[A-Za-z]:")


class NotFound(Exception):
    """
    The request path names nothing that may be served.

    The message is a short generic reason for logs (C{"bad path"},
    C{"hidden"}, C{"outside the root"}, C{"not found"},
    C{"not a regular file"}) and never includes a filesystem path.
    """


@frozen
class Resolved:
    """
    A request path resolved to something servable under the root.

    @ivar path: The absolute real path (symlinks resolved), inside the root.
    @ivar kind: C{"file"} for a regular file, C{"directory"} for a directory.
    @ivar relative: C{path} relative to the root, C{/}-separated, C{""} for
        the root itself. It describes the resolved target, so for a symlink
        it is where the link leads, not the name that was requested.
    """

    path: str
    kind: Literal["file", "directory"]
    relative: str


def _segments(rawPath: bytes) -> list[str] | None:
    """
    Split a percent-encoded request path into decoded names.

    @return: The names in order, or L{None} if the path is malformed.
    """
    if len(rawPath) > MAX_PATH:
        return None
    parts = rawPath.split(b"/")
    if parts[0] == b"" and len(parts) > 1:
        parts = parts[1:]
    if parts[-1] == b"":
        parts = parts[:-1]
    names = []
    for part in parts:
        decoded = unquote_to_bytes(part)
        try:
            name = decoded.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not _isNameable(name, len(decoded)):
            return None
        names.append(name)
    return names


def _isNameable(name: str, size: int) -> bool:
    """
    Whether one decoded path segment may name an entry: not empty, at most
    L{MAX_SEGMENT} bytes (C{size}, UTF-8), not C{.} or C{..}, no NUL, slash
    or backslash, no drive letter.
    """
    return not (
        not size
        or size > MAX_SEGMENT
        or name in (".", "..")
        or "\0" in name
        or "/" in name
        or "\\" in name
        or _DRIVE.match(name)
    )


def _isHidden(names: list[str]) -> bool:
    """
    @return: Whether any of C{names} starts with a dot.
    """
    return any(name.startswith(".") for name in names)


def _realPath(path: str) -> str | None:
    """
    @return: C{os.path.realpath(path)}, or L{None} if it cannot be computed.
    """
    # NotFound is raised by the caller, outside this handler, so no OSError
    # (whose message holds the path) is ever chained onto it.
    try:
        return os.path.realpath(path)
    except (OSError, ValueError, RecursionError):
        # RecursionError: before Python 3.13, realpath recurses once per
        # link in a chain of symlinks.
        return None


def _mode(path: str) -> int | None:
    """
    @return: The C{st_mode} of C{path}, following symlinks, or L{None} if it
        cannot be C{stat}ed.
    """
    try:
        return os.stat(path).st_mode
    except (OSError, ValueError):
        return None


def resolveUnderRoot(root: str, rawPath: bytes, dotfiles: bool = False) -> Resolved:
    """
    Resolve a request path to a file or directory inside C{root}.

    C{rawPath} is split on C{/} before each segment is percent-decoded and
    decoded as strict UTF-8, so an encoded C{%2F} can never act as a
    separator. One leading and one trailing slash are ignored; C{b""} and
    C{b"/"} name the root. Symlinks are followed only while their real
    target stays inside C{root}. Nothing is opened.

    @param root: The served directory: absolute and already passed through
        C{os.path.realpath}.
    @param rawPath: The request path below the mount point, still
        percent-encoded, without a query string.
    @param dotfiles: Whether names starting with C{.} may be served, both in
        the request and in the real path a symlink leads to.
    @return: The resolved file or directory.
    @raise NotFound: If the path is malformed (C{"bad path"}: C{.} or C{..}
        segments, empty inner segments, NUL, encoded C{/}, backslashes,
        drive letters, invalid UTF-8, overlong paths or names), names a
        hidden entry (C{"hidden"}), leads outside C{root}
        (C{"outside the root"}), cannot be C{stat}ed (C{"not found"}), or is
        neither a regular file nor a directory (C{"not a regular file"}).
    """
    names = _segments(rawPath)
    if names is None:
        raise NotFound(_BAD_PATH)
    if not dotfiles and _isHidden(names):
        raise NotFound(_HIDDEN)
    real = _realPath(os.path.join(root, *names))
    if real is None:
        raise NotFound(_NOT_FOUND)
    if os.path.commonpath([root, real]) != root:
        raise NotFound(_OUTSIDE)
    relative = "" if real == root else real[len(root.rstrip("/")) + 1 :]
    if not dotfiles and _isHidden(relative.split("/")):
        raise NotFound(_HIDDEN)
    mode = _mode(real)
    if mode is None:
        raise NotFound(_NOT_FOUND)
    if stat.S_ISDIR(mode):
        return Resolved(path=real, kind="directory", relative=relative)
    if stat.S_ISREG(mode):
        return Resolved(path=real, kind="file", relative=relative)
    raise NotFound(_NOT_REGULAR)


MAX_LISTING = 10_000
"""
The most entries a directory listing shows. Listing a directory reads at
most this many (and one more, to know there are more), so a huge directory
costs a bounded amount of time and memory.
"""


@frozen
class Listing:
    """
    What a directory shows: its servable entries, by name.

    @ivar entries: C{(name, isDirectory)}, sorted by name.
    @ivar truncated: Whether the directory has more servable entries than
        the limit: L{entries} is then a part of them.
    """

    entries: list[tuple[str, bool]]
    truncated: bool


def listUnderRoot(
    root: str,
    directory: Resolved,
    dotfiles: bool = False,
    limit: int | None = None,
) -> Listing:
    """
    List what a request could get from a directory under the root: regular
    files and directories whose names a request path can spell, no hidden
    ones unless C{dotfiles}, and symlinks only where they lead to something
    servable inside C{root}.

    The directory is read in its own order, and only until C{limit}
    servable entries are found; those are then sorted. Only symlinks cost a
    path resolution; other entries cost none (C{scandir} tells their type).

    @param directory: A directory resolved by L{resolveUnderRoot}.
    @param limit: The most entries; by default, L{MAX_LISTING}.
    @raise NotFound: If the directory cannot be read.
    """
    if limit is None:
        limit = MAX_LISTING
    entries: list[tuple[str, bool]] = []
    truncated = False
    try:
        with os.scandir(directory.path) as scan:
            for entry in scan:
                servable = _servable(root, directory, entry, dotfiles)
                if servable is None:
                    continue
                if len(entries) == limit:
                    truncated = True
                    break
                entries.append((entry.name, servable))
    except OSError:
        raise NotFound(_NOT_FOUND) from None
    entries.sort()
    return Listing(entries=entries, truncated=truncated)


def _servable(
    root: str, directory: Resolved, entry: os.DirEntry[str], dotfiles: bool
) -> bool | None:
    """
    @return: Whether C{entry} is a directory, if a request could get it;
        L{None} if not.
    """
    name = entry.name
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        return None  # not UTF-8: it could not be asked for either
    if not _isNameable(name, len(raw)):
        return None  # a request path could not name it
    if name.startswith(".") and not dotfiles:
        return None
    try:
        if entry.is_symlink():
            link = "/".join(filter(None, [directory.relative, name]))
            resolved = resolveUnderRoot(
                root, link.encode("utf-8").replace(b"%", b"%25"), dotfiles
            )
            return resolved.kind == "directory"
        if entry.is_dir(follow_symlinks=False):
            return True
        if entry.is_file(follow_symlinks=False):
            return False
    except (NotFound, OSError):
        pass
    return None
