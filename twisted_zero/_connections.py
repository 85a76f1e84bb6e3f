"""
What every kind of connection shares, raw TCP and HTTP alike: how its
peer's address is written in the log, and how long it lingers at its end.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, ITransport

LINGER_SECONDS = 2.0
"""
After the last byte, how long to wait for the peer to close before closing
anyway. Closing a socket with unread input makes the kernel send a reset,
which can destroy the end of the stream in flight; so the server first
shuts down its sending side, reads until the peer closes, then closes.
"""


def formatAddress(address: IAddress) -> str:
    """
    A short human form of a peer or listening address: C{127.0.0.1:8019},
    C{[::1]:8019}, C{unix:/run/zero.sock}.
    """
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if not name:
            return "unix:(unnamed)"
        return "unix:" + name.decode("utf-8", "replace")
    return str(address)


def formatPeer(transport: ITransport | None) -> str:
    """
    The peer of a connection, as L{formatAddress} writes it; C{?} before
    the connection is made.
    """
    return "?" if transport is None else formatAddress(transport.getPeer())
