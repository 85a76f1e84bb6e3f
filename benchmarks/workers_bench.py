"""
Aggregate throughput of ``twistd zero`` with 1 and with 2 workers, side by
side in interleaved rounds, 16 connections of zeros each. Run by hand:

    python benchmarks/workers_bench.py [--rounds 5] [--bytes 256M]

Both daemons run from this working tree on 127.0.0.1 (port 0) and are
stopped by PID at the end. Each connection is read by its own process, so
that the client is less of a bottleneck; on a 2-core machine the client and
the workers still share the cores, which the numbers show.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from multiprocessing.pool import Pool as PoolType
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(rb"streaming zero on 127\.0\.0\.1:(\d+)")


def startDaemon(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "twistd"),
            "-n", "--pidfile=", "zero", "--listen", "tcp:0:interface=127.0.0.1",
            "--workers", str(workers),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd="/tmp", env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )  # fmt: skip
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    port = None
    ready = 0
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = LISTENING.search(line)
        if match:
            port = int(match.group(1))
            ready += 1
            # The parent logs its listener, then each worker its own.
            if ready == (1 if workers == 1 else 1 + workers):
                return process, port
    process.kill()
    raise SystemExit(f"the daemon with {workers} workers did not start")


def read(job: tuple[int, int]) -> int:
    port, size = job
    buffer = bytearray(4 * 2**20)
    received = 0
    with socket.create_connection(("127.0.0.1", port)) as client:
        while received < size:
            count = client.recv_into(buffer)
            if not count:
                break
            received += count
    return received


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
    size = arguments.megabytes * 2**20
    daemons = {workers: startDaemon(workers) for workers in (1, 2)}
    results: dict[int, list[float]] = {1: [], 2: []}
    try:
        with Pool(arguments.connections) as pool:
            for round in range(arguments.rounds):
                order = (1, 2) if round % 2 == 0 else (2, 1)
                for workers in order:
                    rate = measure(
                        pool, daemons[workers][1], arguments.connections, size
                    )
                    results[workers].append(rate)
                    print(
                        f"round {round + 1}: {workers} worker(s) {rate:.2f} GB/s",
                        file=sys.stderr,
                    )
    finally:
        for process, _ in daemons.values():
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    ratios = [two / one for one, two in zip(results[1], results[2], strict=True)]
    print(
        f"{arguments.connections} connections of zeros, {arguments.rounds} rounds, {os.cpu_count()} cores"
    )
    print(f"1 worker : {statistics.median(results[1]):.2f} GB/s (median)")
    print(f"2 workers: {statistics.median(results[2]):.2f} GB/s (median)")
    print(f"2 / 1    : {statistics.median(ratios):.2f} (median of per-round ratios)")


if __name__ == "__main__":
    main()
