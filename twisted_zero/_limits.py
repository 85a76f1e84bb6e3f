"""
Limits that protect the daemon from its clients: token buckets for rates,
and counts of connections, globally and per address.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

MIN_BURST = 16 * 1024
BURST_SECONDS = 0.05
"""
A bucket holds at most this many seconds' worth of its rate (and at least
L{MIN_BURST} bytes): bursts stay short, and a rate is met within a few
percent over a few seconds.
"""


@define
class TokenBucket:
    """
    Bytes that may be sent: they accrue at C{rate} per second of the clock,
    up to C{burst}.
    """

    _clock: IReactorTime = field(alias="clock")
    rate: float
    burst: int = field(default=0)
    _tokens: float = field(init=False, default=0.0)
    _updated: float = field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.burst <= 0:
            self.burst = max(MIN_BURST, int(self.rate * BURST_SECONDS))
        self._tokens = float(self.burst)
        self._updated = self._clock.seconds()

    def available(self) -> int:
        """
        How many bytes may be sent now.
        """
        now = self._clock.seconds()
        self._tokens = min(
            float(self.burst), self._tokens + (now - self._updated) * self.rate
        )
        self._updated = now
        return int(self._tokens)

    def take(self, count: int) -> None:
        """
        Spend C{count} bytes' worth (never more than L{available} said).
        """
        self._tokens -= count

    def delay(self, count: int) -> float:
        """
        Seconds until C{count} bytes are available, or half a burst if that
        is less: waiting for a full bucket would lose whatever accrues while
        the wait overruns.
        """
        missing = min(count, self.burst // 2) - self.available()
        return max(missing, 0) / self.rate


@define
class Throttle:
    """
    Several buckets at once (a connection's own and the one all connections
    share): a write may take what every one of them allows.
    """

    _buckets: Sequence[TokenBucket] = field(alias="buckets")
    _onWait: Callable[[float], None] | None = field(default=None, alias="onWait")

    def allowance(self, wanted: int) -> int:
        """
        Take and return up to C{wanted} bytes' worth from every bucket; zero
        when any is empty.
        """
        allowed = min([wanted, *(bucket.available() for bucket in self._buckets)])
        if allowed > 0:
            for bucket in self._buckets:
                bucket.take(allowed)
        return max(allowed, 0)

    def refund(self, count: int) -> None:
        """
        Give back what was taken but not sent.
        """
        for bucket in self._buckets:
            bucket.take(-count)

    def delay(self, wanted: int) -> float:
        """
        Seconds until a worthwhile write (C{wanted} bytes, or a burst) may
        be made; the caller is about to wait that long.
        """
        seconds = max(bucket.delay(wanted) for bucket in self._buckets)
        if self._onWait is not None:
            self._onWait(seconds)
        return seconds


@define
class ConnectionLimits:
    """
    Counts of open connections, overall and per client address, and whether
    another may be let in.
    """

    maxConnections: int | None = None
    maxPerAddress: int | None = None
    total: int = field(default=0, init=False)
    _perAddress: dict[str, int] = field(factory=dict, init=False)

    def admit(self, address: str) -> str | None:
        """
        Count a new connection from C{address} in, if the limits allow.

        @return: L{None} if admitted (then L{release} it when it ends), or
            why not: C{"max-connections"} or C{"max-per-ip"}.
        """
        if self.maxConnections is not None and self.total >= self.maxConnections:
            return "max-connections"
        current = self._perAddress.get(address, 0)
        if self.maxPerAddress is not None and current >= self.maxPerAddress:
            return "max-per-ip"
        self.total += 1
        self._perAddress[address] = current + 1
        return None

    def release(self, address: str) -> None:
        """
        Count an admitted connection from C{address} out.
        """
        self.total -= 1
        remaining = self._perAddress[address] - 1
        if remaining:
            self._perAddress[address] = remaining
        else:
            del self._perAddress[address]
