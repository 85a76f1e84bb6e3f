"""
Rates: token buckets a stream draws on before it writes, its own
(C{--rate}) and the one all streams share in turns (C{--total-rate}).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from attrs import define, field
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

    @param clock: Times the accrual.
    @param rate: Bytes per second; positive.
    @param burst: The most bytes it holds; by default L{BURST_SECONDS} of
        the rate, at least L{MIN_BURST}.
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

    @param buckets: The buckets a write draws on, one shared at most.
    @param onWait: Told of every wait for tokens, in seconds (for metrics).
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
