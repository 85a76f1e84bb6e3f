"""
How fairly a shared rate (C{--total-rate}) is divided between clients.

For every path (raw TCP; HTTP, endless C{/zero} in a chunked body and
C{/zero?bytes=100M} with a Content-Length), the benchmark starts a daemon
with C{--total-rate}, opens C{--clients} connections that all start reading
at the same moment, as fast as they can, for C{--seconds}, and reports:

  - each client's throughput, min / median / max, in MiB/s (the fair share
    is the total rate divided by the clients);
  - how many clients got more than 25% above or below the fair share;
  - the daemon's CPU time (user + system) over those seconds.

With C{--baseline PATH} (a checkout made by C{git worktree add PATH
COMMIT}), every round measures that daemon too, in the same round and in a
random order. Run by hand, never in CI::

    python benchmarks/fairness_bench.py --quick
    python benchmarks/fairness_bench.py --rounds 3 --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import benchresults
import benchutil
from benchclients import getRequest
from benchservers import ZeroDaemon, cpuSeconds, daemonEnvironments
from benchutil import BASELINE, HOST, OURS, MiB

ENDPOINT = f"tcp:0:interface={HOST}"
TOLERANCE = 0.25


@dataclass(frozen=True)
class Path_:
    """
    A way to ask the daemon for an endless stream: C{args} for the daemon,
    C{target} the HTTP request target (L{None}: raw TCP).
    """

    label: str
    args: tuple[str, ...]
    target: str | None = None


PATHS = (
    Path_("raw", ("--listen", ENDPOINT)),
    Path_("HTTP /zero (chunked)", ("--http", ENDPOINT), "/zero"),
    Path_("HTTP /zero?bytes=100M", ("--http", ENDPOINT), "/zero?bytes=100M"),
)


@dataclass(frozen=True)
class Sample:
    """
    One measurement: what each client read per second, the fair share, and
    the daemon's CPU seconds meanwhile.
    """

    rates: tuple[float, ...]
    fair: float
    cpu: float

    @property
    def outside(self) -> int:
        return sum(abs(rate - self.fair) > TOLERANCE * self.fair for rate in self.rates)


async def readFor(
    port: int, target: str | None, start: asyncio.Event, end: float, counts: list[int]
) -> None:
    """
    One client: connect (HTTP: and read the response head), read as fast as
    possible from C{start} until C{end} (on the loop's clock), counting into
    C{counts}, the list of one.
    """
    loop = asyncio.get_running_loop()
    if target is None:
        await start.wait()
    reader, writer = await asyncio.open_connection(HOST, port, limit=MiB)
    try:
        if target is not None:
            await start.wait()
            writer.write(getRequest(target))
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise benchutil.BenchError(f"unexpected response: {head[:80]!r}")
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(reader.read(MiB), left)
            except asyncio.TimeoutError:
                break
            if not data:
                raise benchutil.BenchError("the daemon closed a connection early")
            counts[0] += len(data)
    finally:
        writer.transport.abort()


async def runClients(
    port: int, target: str | None, clients: int, seconds: float
) -> list[int]:
    """
    C{clients} clients that start at once and read for C{seconds}.

    @return: How many bytes each read.
    """
    loop = asyncio.get_running_loop()
    start = asyncio.Event()
    counts = [[0] for _ in range(clients)]
    # HTTP clients connect first (a second to do so), then all ask at once;
    # raw clients connect at once, as their stream starts when they do.
    end = loop.time() + 1.0 + seconds
    tasks = [
        asyncio.ensure_future(readFor(port, target, start, end, count))
        for count in counts
    ]
    await asyncio.sleep(1.0)
    start.set()
    await asyncio.gather(*tasks)
    return [count[0] for count in counts]


def measure(
    daemon: ZeroDaemon, path: Path_, clients: int, seconds: float, totalRate: int
) -> Sample:
    """
    Run the clients against C{daemon} and say how fairly they were served.
    """
    before = cpuSeconds(daemon.process.pid)
    counts = asyncio.run(runClients(daemon.port, path.target, clients, seconds))
    cpu = cpuSeconds(daemon.process.pid) - before
    rates = tuple(count / seconds / MiB for count in counts)
    return Sample(rates, totalRate / clients / MiB, cpu)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--total-rate", type=benchutil.parseSize, default=50 * MiB, help="default 50M"
    )
    parser.add_argument("--only", help="only the paths whose label contains this")
    parser.add_argument(
        "--quick", action="store_true", help="one round, 20 clients, 4 s"
    )
    benchutil.addBaselineOption(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.clients, args.seconds = 1, 20, 4.0
    envs = daemonEnvironments(args.baseline)
    kinds = list(envs)
    paths = [p for p in PATHS if args.only is None or args.only in p.label]
    samples: dict[tuple[str, str], list[Sample]] = {}
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="fairness-bench-") as work:
        for roundIndex in range(args.rounds):
            for path in paths:
                for kind in rng.sample(kinds, len(kinds)):
                    benchutil.progress(f"round {roundIndex + 1}: {path.label}, {kind}")
                    daemon = ZeroDaemon(
                        kind,
                        ("--total-rate", str(args.total_rate), *path.args),
                        envs[kind],
                        Path(work),
                    )
                    try:
                        sample = measure(
                            daemon, path, args.clients, args.seconds, args.total_rate
                        )
                    finally:
                        daemon.stop()
                    benchutil.progress(f"  {describe(sample)}")
                    samples.setdefault((path.label, kind), []).append(sample)
    report(paths, kinds, samples, args)


def describe(sample: Sample) -> str:
    rates = sample.rates
    return (
        f"min {min(rates):.2f} median {statistics.median(rates):.2f} "
        f"max {max(rates):.2f} MiB/s, {sample.outside} outside "
        f"±{TOLERANCE:.0%}, daemon CPU {sample.cpu:.2f} s"
    )


def report(
    paths: list[Path_],
    kinds: list[str],
    samples: dict[tuple[str, str], list[Sample]],
    args: argparse.Namespace,
) -> None:
    fair = args.total_rate / args.clients / MiB
    print(
        f"{args.clients} clients, --total-rate {args.total_rate / MiB:g} MiB/s "
        f"(fair share {fair:.2f} MiB/s), {args.seconds:g} s, {args.rounds} "
        f"rounds; per round: client MiB/s min / median / max, clients outside "
        f"±{TOLERANCE:.0%} of the fair share, daemon CPU seconds"
    )
    headers = ["path", "daemon", "round", "min", "median", "max", "outside", "CPU s"]
    rows = []
    for path in paths:
        for kind in kinds:
            for index, sample in enumerate(samples.get((path.label, kind), [])):
                rates = sample.rates
                rows.append(
                    [
                        path.label,
                        kind,
                        str(index + 1),
                        benchresults.fmt(min(rates)),
                        benchresults.fmt(statistics.median(rates)),
                        benchresults.fmt(max(rates)),
                        f"{sample.outside}/{len(rates)}",
                        benchresults.fmt(sample.cpu),
                    ]
                )
    print(benchresults.table(headers, rows, textColumns=2))
    if BASELINE in kinds:
        print("\nMedian daemon CPU seconds over the rounds, ours / baseline:")
        for path in paths:
            ours = benchresults.median(
                [s.cpu for s in samples.get((path.label, OURS), [])]
            )
            base = benchresults.median(
                [s.cpu for s in samples.get((path.label, BASELINE), [])]
            )
            ratio = None if ours is None or not base else ours / base
            print(
                f"  {path.label}: {benchresults.fmt(ours)} / {benchresults.fmt(base)} = {benchresults.fmt(ratio)}"
            )


if __name__ == "__main__":
    main()
