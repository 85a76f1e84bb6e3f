"""
What the daemon does against slow, stuck, greedy or too many clients:
admission (connections overall and per address), the rates and unsent limit
of each connection, and each stream's guard (its stall watch and maximum
duration, and the abort they start).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from attrs import define, field
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger

from ._connections import formatAddress
from ._interfaces import StreamObserver
from ._limits import SharedBucket, Throttle, TokenBucket
from ._metrics import Metrics
from ._unsent import LiftingObserver, UnsentLimit, tcpBytesAcked


@define
class ConnectionLimits:
    """
    Counts of open connections, overall and per client address, and whether
    another may be let in.

    @param maxConnections: The most connections at once; L{None} for no
        limit.
    @param maxPerAddress: The most connections at once from one address;
        L{None} for no limit.
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


@define
class StallWatch:
    """
    Call C{onStall} once a progress count has not changed for C{timeout}
    seconds of the clock.

    @param clock: Times the watch.
    @param timeout: Seconds without progress that make a stall.
    @param progress: Returns the progress so far (anything comparable).
    @param onStall: Called once, at the stall.
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
    one for all listeners. (The connections open now are counted, and
    drained at shutdown, by L{twisted_zero._registry.ConnectionRegistry}.)

    @param clock: Times the rates, stall watches and durations.
    @param stallTimeout: Abort a connection that has made no write progress
        for this many seconds; L{None} for never.
    @param maxDuration: Abort any stream after this many seconds; L{None}
        for never.
    @param rate: Bytes per second for each connection; L{None} for no limit.
    @param totalRate: Bytes per second for all connections together.
    @param limits: How many connections are let in.
    @param onRateWait: Told of every wait for rate tokens (for metrics).
    @param maxUnsent: The most bytes the kernel holds unsent for one TCP
        connection until its client has taken
        L{twisted_zero._unsent.UNSENT_EARNED} bytes (see L{UnsentLimit});
        L{None} for the kernel's default.
    """

    clock: IReactorTime
    stallTimeout: float | None = None
    maxDuration: float | None = None
    rate: float | None = None
    totalRate: float | None = None
    limits: ConnectionLimits = field(factory=ConnectionLimits)
    onRateWait: Callable[[float], None] | None = None
    maxUnsent: int | None = None
    _total: SharedBucket | None = field(default=None, init=False)
    _unsent: dict[object, UnsentLimit] = field(factory=dict, init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        if self.totalRate is not None:
            self._total = SharedBucket(clock=self.clock, rate=self.totalRate)

    def admit(self, address: object) -> str | None:
        """
        Let a new connection from C{address} in, or say why not (see
        L{ConnectionLimits.admit}). A connection without an address is let
        in uncounted (and not released).
        """
        if address is None:
            return None
        return self.limits.admit(_addressKey(address))

    def admitFrom(self, address: IAddress | None, kind: str, metrics: Metrics) -> bool:
        """
        Let a new connection from C{address} in (see L{admit}), or count
        and log its refusal.

        @param kind: The listener's kind, for the metrics (C{"tcp"},
            C{"http"}).
        @return: Whether it is let in.
        """
        refused = self.admit(address)
        if refused is None:
            return True
        metrics.rejected(kind, refused)
        self._log.warn(
            "refused a connection from {peer}: {why}",
            peer="?" if address is None else formatAddress(address),
            why=refused,
        )
        return False

    def opened(self, transport: object) -> None:
        """
        A connection is open: limit what the kernel holds unsent for it,
        until it is L{closed}.
        """
        if self.maxUnsent is not None:
            limit = UnsentLimit(transport=transport, limit=self.maxUnsent)
            if not limit.lifted:
                self._unsent[transport] = limit

    def closed(self, transport: object, admitted: object) -> None:
        """
        A connection L{opened} (and admitted from the address C{admitted},
        unless L{None}) is closed.
        """
        self._unsent.pop(transport, None)
        if admitted is not None:
            self.limits.release(_addressKey(admitted))

    def observe(
        self, transport: object, observer: StreamObserver | None
    ) -> StreamObserver | None:
        """
        The observer for a stream on the connection C{transport}: C{observer}
        (which may be L{None}), told too of what is sent, if the
        connection's unsent bytes are limited until its client earns more.
        """
        limit = self._unsent.get(transport)
        if limit is None:
            return observer
        return LiftingObserver(limit, observer)

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

    def guard(
        self,
        transport: object,
        producer: GuardedProducer,
        drop: Callable[[str], None],
        stalled: Callable[[], None] | None = None,
        received: Callable[[], int] | None = None,
    ) -> StreamGuard:
        """
        Guard one stream from its start: abort it once it has stalled for
        the stall timeout (progress is what the peer acknowledged, over TCP,
        or what the producer wrote or waited for its rate, or what the peer
        sent), or once it has run for the maximum duration.

        @param transport: The stream's connection.
        @param producer: The stream's producer.
        @param drop: The owner's end of an abort: record why and abort the
            connection (the producer is stopped by then).
        @param stalled: Called before a stall's abort (metrics); L{None}
            for nothing.
        @param received: How many bytes the peer has sent: a peer that
            sends (an upload, not reading meanwhile) is not stalled;
            L{None} for a stream whose peer's sending does not count.
        """
        guard = StreamGuard(producer=producer, drop=drop)
        if self.stallTimeout:

            def onStall() -> None:
                if stalled is not None:
                    stalled()
                guard.abort("stalled")

            guard.watch = StallWatch(
                clock=self.clock,
                timeout=self.stallTimeout,
                progress=lambda: (
                    tcpBytesAcked(transport),
                    producer.bytesSent,
                    producer.rateWaits,
                    None if received is None else received(),
                ),
                onStall=onStall,
            )
            guard.watch.start()
        if self.maxDuration is not None:
            guard.expiry = self.clock.callLater(
                self.maxDuration, guard.abort, "max duration"
            )
        return guard


class GuardedProducer(Protocol):
    """
    What a L{StreamGuard} needs of a stream's producer: its progress, and
    stopping it.
    """

    @property
    def bytesSent(self) -> int:
        """
        The bytes written so far.
        """

    @property
    def rateWaits(self) -> int:
        """
        The times it waited for its rate.
        """

    def stopProducing(self) -> None:
        """
        Stop at once; read and write nothing more.
        """


@define(eq=False)
class StreamGuard:
    """
    One stream's protection while it runs (L{Protection.guard}): its stall
    watch and its deadline, and the abort they start, which stops the
    producer before the owner drops the connection (until the connection is
    lost, a due write could otherwise read one more chunk into a doomed
    buffer).

    @param producer: The stream's producer.
    @param drop: The owner's end of an abort: record why and abort the
        connection.
    @ivar watch: The stall watch, if a stall timeout is set.
    @ivar expiry: The deadline, if a maximum duration is set.
    """

    _producer: GuardedProducer = field(alias="producer")
    _drop: Callable[[str], None] = field(alias="drop")
    watch: StallWatch | None = None
    expiry: IDelayedCall | None = None

    def abort(self, why: str) -> None:
        """
        Stop the producer, then have the owner drop the connection.

        @param why: The stream's ending, for the log.
        """
        self.stop()
        self._producer.stopProducing()
        self._drop(why)

    def stop(self) -> None:
        """
        The stream has ended: nothing of the guard is left scheduled.
        Idempotent.
        """
        # Dropped, not only stopped: the watch calls back into the guard,
        # a cycle that would keep the stream until the garbage collector.
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.stop()
        expiry, self.expiry = self.expiry, None
        if expiry is not None and expiry.active():
            expiry.cancel()
