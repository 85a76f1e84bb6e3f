"""
Aggregate throughput of ``twistd zero`` with 1 and with 2 workers, side by
side in interleaved rounds, 16 connections of zeros each. Run by hand:

    python benchmarks/workers_bench.py [--rounds 5] [--megabytes 256]

Both daemons run from this working tree on 127.0.0.1 (port 0) and are
stopped by PID at the end. Each connection is read by its own process, so
that the client is less of a bottleneck; on a 2-core machine the client and
the workers still share the cores, which the numbers show.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing import Pool
from multiprocessing.pool import Pool as PoolType
from pathlib import Path

from benchclients import readStream
from benchservers import ZeroDaemon, serverEnvironment
from benchutil import HOST, OURS, MiB


def startDaemon(workers: int, workDir: Path) -> ZeroDaemon:
    """
    Our daemon with C{workers} workers, started once the parent and each
    worker listen.
    """
    return ZeroDaemon(
        f"{workers}-workers",
        ("--listen", f"tcp:0:interface={HOST}", "--workers", str(workers)),
        serverEnvironment(OURS, None),
        workDir,
        listeners=1 if workers == 1 else 1 + workers,
    )


def read(job: tuple[int, int]) -> int:
    port, size = job
    with socket.create_connection((HOST, port)) as client:
        return readStream(client, memoryview(bytearray(4 * MiB)), size)


def measure(pool: PoolType, port: int, connections: int, size: int) -> float:
    started = time.perf_counter()
    total = sum(pool.map(read, [(port, size)] * connections))
    return total / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--megabytes", type=int, default=256, help="per connection")
    arguments = parser.parse_args()
    size = arguments.megabytes * MiB
    results: dict[int, list[float]] = {1: [], 2: []}
    with (
        tempfile.TemporaryDirectory(prefix="workers-bench-") as work,
        contextlib.ExitStack() as stack,
    ):
        daemons = {
            workers: stack.enter_context(startDaemon(workers, Path(work)))
            for workers in (1, 2)
        }
        with Pool(arguments.connections) as pool:
            for round in range(arguments.rounds):
                order = (1, 2) if round % 2 == 0 else (2, 1)
                for workers in order:
                    rate = measure(
                        pool, daemons[workers].port, arguments.connections, size
                    )
                    results[workers].append(rate)
                    print(
                        f"round {round + 1}: {workers} worker(s) {rate:.2f} GB/s",
                        file=sys.stderr,
                    )
    ratios = [two / one for one, two in zip(results[1], results[2], strict=True)]
    print(
        f"{arguments.connections} connections of zeros, {arguments.rounds} rounds, {os.cpu_count()} cores"
    )
    print(f"1 worker : {statistics.median(results[1]):.2f} GB/s (median)")
    print(f"2 workers: {statistics.median(results[2]):.2f} GB/s (median)")
    print(f"2 / 1    : {statistics.median(ratios):.2f} (median of per-round ratios)")


if __name__ == "__main__":
    main()
