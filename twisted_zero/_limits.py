"""
Limits that protect the daemon from its clients: token buckets for rates,
and counts of connections, globally and per address.
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

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

MIN_QUANTUM = 16 * 1024
"""
The fewest bytes a L{SharedBucket} hands a stream at a time (unless its
burst is smaller): however many streams share it, a turn is worth a write.
"""


@define
class TokenBucket:
    """
    Bytes that may be sent: they accrue at C{rate} per second of the clock,
    up to C{burst}. One stream draws on it; streams that share a rate draw
    on a L{SharedBucket}.
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

    def _level(self) -> float:
        """
        The tokens now, accrued up to the burst.
        """
        now = self._clock.seconds()
        self._tokens = min(
            float(self.burst), self._tokens + (now - self._updated) * self.rate
        )
        self._updated = now
        return self._tokens

    def available(self) -> int:
        """
        How many bytes may be sent now.
        """
        return int(self._level())

    def take(self, count: int) -> None:
        """
        Spend C{count} bytes' worth (never more than L{available} said); a
        negative count gives them back.
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
class SharedBucket(TokenBucket):
    """
    A rate that streams share (C{--total-rate}), handed out in turns.

    A stream that wants bytes joins a queue (L{Throttle.allowance}); one
    timer per bucket, not one per stream, fires whenever a L{quantum} has
    accrued, takes the streams that were waiting then in the order they came
    and reserves a quantum for each, then wakes it. A stream only ever sends
    what was reserved for it: the first to run in a reactor turn, or one
    resumed by its transport, cannot take what accrued for the others. A
    stream that waits costs nothing until its turn; one that is paused or
    ends leaves the queue and gives back what it did not use.

    Turns come at most once per quantum's worth of the rate (a timer that
    fires late may catch up by one), even with more tokens in the bucket:
    they are there to serve many streams at once, not one stream many
    times, so that a stream alone for a moment (the first to connect) gets
    the rate, not the burst that accrued for all.

    @ivar users: How many streams draw on this bucket now.
    """

    users: int = field(init=False, default=0)
    _waiting: OrderedDict[Throttle, int] = field(
        factory=OrderedDict, init=False, repr=False
    )
    _tickets: int = field(init=False, default=0)
    _timer: IDelayedCall | None = field(init=False, default=None)
    _serving: bool = field(init=False, default=False)
    _nextTurn: float | None = field(init=False, default=None)

    def quantum(self) -> int:
        """
        What one turn is worth: a fair share of a burst, so that a round of
        every stream takes about one burst, but at most an eighth of one, so
        that a stream alone for a moment (the first to connect) does not
        take the burst that accrued for all; at least L{MIN_QUANTUM}, at
        most the burst.
        """
        share = min(self.burst // max(self.users, 1), self.burst // 8)
        return min(max(share, MIN_QUANTUM), self.burst)

    @property
    def waiting(self) -> int:
        """
        How many streams wait for their turn.
        """
        return len(self._waiting)

    def enqueue(self, throttle: Throttle) -> None:
        """
        Have C{throttle} woken (L{Throttle.granted}) once its turn comes,
        after every stream already waiting. Nothing changes if it waits.
        """
        if throttle not in self._waiting:
            self._waiting[throttle] = self._tickets
            self._tickets += 1
            self._schedule()

    def withdraw(self, throttle: Throttle) -> None:
        """
        C{throttle} no longer waits for its turn; with none waiting, nothing
        stays scheduled.
        """
        if self._waiting.pop(throttle, None) is not None:
            self._schedule()

    def _schedule(self) -> None:
        """
        Serve the queue once a quantum has accrued: start the timer if
        streams wait, cancel it if none does.
        """
        if self._serving:
            return  # _serve schedules when it is done
        if not self._waiting:
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
        elif self._timer is None:
            seconds = (self.quantum() - self._level()) / self.rate
            if self._nextTurn is not None:
                seconds = max(seconds, self._nextTurn - self._clock.seconds())
            self._timer = self._clock.callLater(max(seconds, 0), self._serve)

    def _serve(self) -> None:
        """
        Reserve a quantum for each stream that waited when this began, in
        turn, while the tokens last; then wait for the next quantum.
        """
        self._timer = None
        self._serving = True
        now = self._clock.seconds()
        turn = self.quantum() / self.rate
        due = now if self._nextTurn is None else max(self._nextTurn, now - turn)
        self._nextTurn = due + turn
        try:
            last = self._tickets
            while self._waiting:
                throttle, ticket = next(iter(self._waiting.items()))
                quantum = self.quantum()
                # Within a byte: floating-point accrual must not cost a turn.
                if ticket >= last or self._level() <= quantum - 1:
                    break
                del self._waiting[throttle]
                self.take(quantum)
                throttle.granted(quantum)
        finally:
            self._serving = False
            self._schedule()


@define(eq=False)
class Throttle:
    """
    Several buckets at once (a connection's own and the one all connections
    share): a write may take what every one of them allows.

    Of a L{SharedBucket} (at most one), a stream takes only what the bucket
    reserved for it in its turn; it waits for that turn (L{delay} is then
    L{None}) and is woken by the callback given to L{wakeWith}. It takes
    its turn only once its own buckets have something to give.

    Throttles compare by identity: a bucket's queue holds each once.
    """

    _buckets: Sequence[TokenBucket] = field(alias="buckets")
    _onWait: Callable[[float], None] | None = field(default=None, alias="onWait")
    _released: bool = field(default=False, init=False)
    _own: list[TokenBucket] = field(factory=list, init=False)
    _shared: SharedBucket | None = field(default=None, init=False)
    _reserved: int = field(default=0, init=False)
    _queuedAt: float | None = field(default=None, init=False)
    _wake: Callable[[], None] | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        for bucket in self._buckets:
            if not isinstance(bucket, SharedBucket):
                self._own.append(bucket)
            elif self._shared is None:
                self._shared = bucket
            else:
                raise ValueError("a throttle draws on one shared bucket at most")
        if self._shared is not None:
            self._shared.users += 1

    def wakeWith(self, wake: Callable[[], None]) -> None:
        """
        Call C{wake} when the stream's turn at the shared bucket has come:
        what L{allowance} now gives was reserved for it.
        """
        self._wake = wake

    def release(self) -> None:
        """
        The stream has ended: it no longer shares the buckets, waits for no
        turn, and gives back what was reserved for it. Idempotent.
        """
        if not self._released:
            self._released = True
            self._wake = None
            self.withdraw()
            if self._shared is not None:
                self._shared.users -= 1

    def withdraw(self) -> None:
        """
        The stream cannot send for now (its consumer paused it): leave the
        shared bucket's queue and give back what was reserved for it, for
        the streams that can. Its next L{allowance} queues it again, last.
        """
        shared = self._shared
        if shared is None:
            return
        self._waited()
        reserved, self._reserved = self._reserved, 0
        if reserved:
            shared.take(-reserved)
        shared.withdraw(self)

    def granted(self, count: int) -> None:
        """
        The shared bucket reserved C{count} bytes for this stream, which
        waited for its turn: wake it.
        """
        self._reserved += count
        self._waited()
        if self._wake is not None:
            self._wake()

    def _waited(self) -> None:
        """
        The stream no longer waits for its turn: report how long it did.
        """
        queuedAt, self._queuedAt = self._queuedAt, None
        if queuedAt is not None and self._onWait is not None:
            assert self._shared is not None
            self._onWait(self._shared._clock.seconds() - queuedAt)

    def allowance(self, wanted: int) -> int:
        """
        Take and return up to C{wanted} bytes' worth from every bucket; zero
        when one of its own is empty, or when nothing is reserved for it of
        the shared one (it then waits for its turn).
        """
        allowed = min([wanted, *(bucket.available() for bucket in self._own)])
        shared = self._shared
        if shared is not None:
            if allowed <= 0:
                # Its own rate holds it back: a turn would be wasted.
                self.withdraw()
                return 0
            if self._reserved <= 0:
                if self._queuedAt is None:
                    self._queuedAt = shared._clock.seconds()
                shared.enqueue(self)
                return 0
            allowed = min(allowed, self._reserved)
            self._reserved -= allowed
        if allowed <= 0:
            return 0
        for bucket in self._own:
            bucket.take(allowed)
        return allowed

    def refund(self, count: int) -> None:
        """
        Give back what was taken but not sent.
        """
        for bucket in self._buckets:
            bucket.take(-count)

    def delay(self, wanted: int) -> float | None:
        """
        After an L{allowance} of zero: seconds until a worthwhile write
        (C{wanted} bytes, or half a burst) may be made, as the caller is
        about to wait that long; or L{None} if the stream waits for its turn
        at the shared bucket, to be woken then.
        """
        if self._queuedAt is not None:
            return None
        seconds = max((bucket.delay(wanted) for bucket in self._own), default=0.0)
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

NO_UNSENT_LIMIT = -1
"""
What L{limitUnsent} is given to lift a limit (the kernel reads it as the
largest unsigned value, its own default).
"""

UNSENT_EARNED = 4 * 2**20
"""
How many bytes a client must have taken (acknowledged) for its
connection's limit on unsent bytes to be lifted (L{UnsentLimit}).
"""


@define(eq=False)
class UnsentLimit:
    """
    A limit on what the kernel holds unsent for one connection (see
    L{limitUnsent}) until its client has taken C{earned} bytes: a client
    that reads earns the send buffer the kernel would give it (and the
    speed that comes with it), one that reads nothing never pins more than
    C{limit} of the host's TCP memory. Told of what is sent (L{sent}), it
    asks the kernel what the client has taken after every C{limit} bytes.
    """

    _transport: object = field(alias="transport")
    _limit: int = field(alias="limit")
    _earned: int = field(default=UNSENT_EARNED, alias="earned")
    lifted: bool = field(default=False, init=False)
    _sent: int = field(default=0, init=False)
    _next: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if not limitUnsent(self._transport, self._limit):
            self.lifted = True  # nothing to lift: not TCP, or no such option

    def sent(self, count: int) -> None:
        """
        C{count} more bytes were sent (or written) on the connection.
        """
        if self.lifted:
            return
        self._sent += count
        if self._sent < self._next:
            return
        self._next = self._sent + self._limit
        acked = tcpBytesAcked(self._transport)
        if acked is not None and acked >= self._earned:
            self.lifted = limitUnsent(self._transport, NO_UNSENT_LIMIT) or True


@define
class _LiftingObserver:
    """
    A stream's observer that also tells its connection's L{UnsentLimit} what
    is sent.
    """

    _limit: UnsentLimit
    _observer: Any

    def chunkWritten(self, count: int) -> None:
        self._limit.sent(count)
        if self._observer is not None:
            self._observer.chunkWritten(count)

    def pauseChanged(self, paused: bool) -> None:
        if self._observer is not None:
            self._observer.pauseChanged(paused)


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
        connection until its client has taken L{UNSENT_EARNED} bytes (see
        L{UnsentLimit}); L{None} for the kernel's default.
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
    _open: set[object] = field(factory=set, init=False)
    _unsent: dict[object, UnsentLimit] = field(factory=dict, init=False)
    _drained: list[Deferred[None]] = field(factory=list, init=False)

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

    def opened(self, transport: object) -> None:
        """
        A connection is open: count it until L{closed}, and limit what the
        kernel holds unsent for it.
        """
        self._open.add(transport)
        if self.maxUnsent is not None:
            limit = UnsentLimit(transport=transport, limit=self.maxUnsent)
            if not limit.lifted:
                self._unsent[transport] = limit

    def closed(self, transport: object, admitted: object) -> None:
        """
        A connection L{opened} (and admitted from the address C{admitted},
        unless L{None}) is closed.
        """
        self._open.discard(transport)
        self._unsent.pop(transport, None)
        if admitted is not None:
            self.limits.release(_addressKey(admitted))
        if not self._open:
            drained, self._drained = self._drained, []
            for waiting in drained:
                waiting.callback(None)

    def observe(self, transport: object, observer: Any) -> Any:
        """
        The observer for a stream on the connection C{transport}: C{observer}
        (which may be L{None}), told too of what is sent, if the
        connection's unsent bytes are limited until its client earns more.
        """
        limit = self._unsent.get(transport)
        if limit is None:
            return observer
        return _LiftingObserver(limit, observer)

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
