"""
Limits that protect the daemon from its clients: token buckets for rates,
and counts of connections, globally and per address.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

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
    users: int = field(init=False, default=0)
    """
    How many streams draw on this bucket now: a shared bucket gives each a
    fair share per write, so that the first to wake cannot take it all.
    """

    def share(self) -> int:
        """
        The most one stream may take at once.
        """
        return self.burst if self.users <= 1 else max(self.burst // self.users, 1)

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
    _released: bool = field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        for bucket in self._buckets:
            bucket.users += 1

    def release(self) -> None:
        """
        The stream has ended: it no longer shares the buckets. Idempotent.
        """
        if not self._released:
            self._released = True
            for bucket in self._buckets:
                bucket.users -= 1

    def allowance(self, wanted: int) -> int:
        """
        Take and return up to C{wanted} bytes' worth from every bucket (at
        most a fair share of a shared one); zero when any is empty.
        """
        allowed = min(
            [
                wanted,
                *(min(bucket.available(), bucket.share()) for bucket in self._buckets),
            ]
        )
        if allowed > 0:
            for bucket in self._buckets:
                bucket.take(allowed)
        return max(allowed, 0)

    def contended(self) -> bool:
        """
        Whether another stream draws on one of these buckets too: then a
        stream writes once per reactor turn, so that they take turns.
        """
        return any(bucket.users > 1 for bucket in self._buckets)

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
        seconds = max(
            bucket.delay(min(wanted, bucket.share())) for bucket in self._buckets
        )
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


def _addressKey(address: object) -> str:
    """
    The client address that per-address limits count: the IP address, or
    the kind of address where there is none (UNIX sockets).
    """
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else type(address).__name__


def _tcpSocket(transport: object) -> socket.socket | None:
    """
    The TCP socket under C{transport}, looking through wrapping transports
    (TLS); L{None} if there is none.
    """
    for _ in range(4):
        getHandle = getattr(transport, "getHandle", None)
        handle = getHandle() if getHandle is not None else None
        if isinstance(handle, socket.socket) and handle.family in _TCP_FAMILIES:
            return handle
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def tcpBytesAcked(transport: object) -> int | None:
    """
    How many bytes the peer's kernel has acknowledged on this connection (a
    count that grows while a client reads, however slowly, and stops when it
    does not), or L{None} where the kernel does not say: not TCP, not
    Linux. Wrapping transports (TLS) are looked through.
    """
    handle = _tcpSocket(transport)
    if handle is None:
        return None
    try:
        info = handle.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < _BYTES_ACKED_OFFSET + 8:
        return None
    acked: int = struct.unpack_from("Q", info, _BYTES_ACKED_OFFSET)[0]
    return acked


def limitUnsent(transport: object, size: int) -> bool:
    """
    Have the kernel hold at most about C{size} bytes of this connection that
    it has not sent yet (C{TCP_NOTSENT_LOWAT}): a send takes no more, and
    the socket is writable only below it. What is in flight is not limited,
    so a fast or distant client keeps its speed; but a client that reads
    nothing no longer gets the whole send buffer, which on Linux grows to
    4 MiB (C{tcp_wmem}) of the kernel's memory for TCP, shared by every
    connection of the host.

    @return: Whether the limit was set: not on a transport without a TCP
        socket, nor where the kernel lacks the option.
    """
    handle = _tcpSocket(transport)
    if handle is None:
        return False
    try:
        handle.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, size)
    except OSError:
        return False
    return True


TCP_NOTSENT_LOWAT: int = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
"""
The socket option (Linux 3.12; C{socket} names it from Python 3.13 on).
"""

_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_BYTES_ACKED_OFFSET = 120
"""
Where C{tcpi_bytes_acked} lies in Linux's C{struct tcp_info} (since 4.1).
"""


@define
class StallWatch:
    """
    Call C{onStall} once a progress count has not changed for C{timeout}
    seconds of the clock.
    """

    _clock: IReactorTime = field(alias="clock")
    _timeout: float = field(alias="timeout")
    _progress: Callable[[], object] = field(alias="progress")
    _onStall: Callable[[], None] = field(alias="onStall")
    _last: object = field(default=None, init=False)
    _since: float = field(default=0.0, init=False)
    _check: IDelayedCall | None = field(default=None, init=False)

    def start(self) -> None:
        """
        Start watching.
        """
        self._last = self._progress()
        self._since = self._clock.seconds()
        self._schedule()

    def stop(self) -> None:
        """
        Stop watching. Idempotent.
        """
        check, self._check = self._check, None
        if check is not None and check.active():
            check.cancel()

    def _schedule(self) -> None:
        self._check = self._clock.callLater(max(self._timeout / 4, 0.1), self._look)

    def _look(self) -> None:
        self._check = None
        now = self._clock.seconds()
        current = self._progress()
        if current != self._last:
            self._last, self._since = current, now
        elif now - self._since >= self._timeout:
            self._onStall()
            return
        self._schedule()


@define
class Protection:
    """
    What the daemon does against slow, stuck, greedy or too many clients;
    one for all listeners.

    @ivar stallTimeout: Abort a connection that has made no write progress
        for this many seconds; L{None} for never.
    @ivar maxDuration: Abort any stream after this many seconds; L{None}
        for never.
    @ivar rate: Bytes per second for each connection; L{None} for no limit.
    @ivar totalRate: Bytes per second for all connections together.
    @ivar limits: How many connections are let in.
    @ivar onRateWait: Told of every wait for rate tokens (for metrics).
    @ivar maxUnsent: The most bytes the kernel holds unsent for one TCP
        connection (see L{limitUnsent}); L{None} for the kernel's default.
    """

    clock: IReactorTime
    stallTimeout: float | None = None
    maxDuration: float | None = None
    rate: float | None = None
    totalRate: float | None = None
    limits: ConnectionLimits = field(factory=ConnectionLimits)
    onRateWait: Callable[[float], None] | None = None
    maxUnsent: int | None = None
    _total: TokenBucket | None = field(default=None, init=False)
    _open: set[object] = field(factory=set, init=False)
    _drained: list[Deferred[None]] = field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        if self.totalRate is not None:
            self._total = TokenBucket(clock=self.clock, rate=self.totalRate)

    def admit(self, address: object) -> str | None:
        """
        Let a new connection from C{address} in, or say why not (see
        L{ConnectionLimits.admit}). A connection without an address is let
        in uncounted (and not released).
        """
        if address is None:
            return None
        return self.limits.admit(_addressKey(address))

    def opened(self, transport: object) -> None:
        """
        A connection is open: count it until L{closed}, and limit what the
        kernel holds unsent for it.
        """
        self._open.add(transport)
        if self.maxUnsent is not None:
            limitUnsent(transport, self.maxUnsent)

    def closed(self, transport: object, admitted: object) -> None:
        """
        A connection L{opened} (and admitted from the address C{admitted},
        unless L{None}) is closed.
        """
        self._open.discard(transport)
        if admitted is not None:
            self.limits.release(_addressKey(admitted))
        if not self._open:
            drained, self._drained = self._drained, []
            for waiting in drained:
                waiting.callback(None)

    @property
    def openConnections(self) -> int:
        """
        How many connections are open now.
        """
        return len(self._open)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Wait for the open connections to end, for C{timeout} seconds at most;
        then abort those left.

        @return: A L{Deferred} that fires once none is open.
        """
        if not self._open:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._drained.append(waiting)
        abort = self.clock.callLater(timeout, self._abortAll)
        waiting.addBoth(lambda result: abort.cancel() if abort.active() else None)
        return waiting

    def _abortAll(self) -> None:
        for transport in list(self._open):
            transport.abortConnection()  # type: ignore[attr-defined]

    def throttle(self, requested: float | None = None) -> Throttle | None:
        """
        The throttle for a new stream: its own rate (the lower of the
        server's and C{requested}, which may only lower it) and the shared
        total.
        """
        rates = [rate for rate in (self.rate, requested) if rate is not None]
        buckets = [TokenBucket(clock=self.clock, rate=min(rates))] if rates else []
        if self._total is not None:
            buckets.append(self._total)
        if not buckets:
            return None
        return Throttle(buckets=buckets, onWait=self.onRateWait)

    def watch(
        self, transport: object, sent: Callable[[], object], onStall: Callable[[], None]
    ) -> StallWatch | None:
        """
        Start watching a connection for stalls, if a stall timeout is set.
        Progress is what the peer acknowledged (TCP) or what the producer
        could write.
        """
        if not self.stallTimeout:
            return None
        watch = StallWatch(
            clock=self.clock,
            timeout=self.stallTimeout,
            progress=lambda: (tcpBytesAcked(transport), sent()),
            onStall=onStall,
        )
        watch.start()
        return watch
