"""Throughput of the sandbox: bars served per second over real HTTP, 5,000 symbols x 5,000 bars.

Samples batches of 120 synthetic symbols (the API's batch limit), each 5,000 hourly bars, spread
evenly over SYN0001..SYN5000, against a real server in its own process (``python -m
services.sandbox`` on a free port, so the client does not share its interpreter lock).
Baseline, measured in the same run on the same bars: the standard library's ``json.dumps`` of
the already-built answer (a list of dicts per symbol), i.e. what serving would cost if the bars
were precomputed and only encoded. Run: ``.venv/bin/python bench/bench_sandbox.py [--batches N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import requests

from services.sandbox.market import SYNTHETIC_COUNT, synthetic_symbols

BATCH = 120
BARS = 5000
NOW = datetime(2026, 3, 10, 19, 47, tzinfo=UTC)


def sample_batches(count: int) -> list[list[str]]:
    """``count`` batches of consecutive symbols starting at evenly spaced points of the universe."""
    symbols = synthetic_symbols()
    stride = (SYNTHETIC_COUNT - BATCH) // max(1, count - 1) if count > 1 else 0
    return [symbols[i * stride : i * stride + BATCH] for i in range(count)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def sandbox_process() -> Iterator[str]:
    """A sandbox server process with a frozen clock and an unlimited plan; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "SANDBOX_PORT": str(port),
        "SANDBOX_CLOCK_START": NOW.isoformat(),
        "SANDBOX_CLOCK_SPEED": "0",
        "SANDBOX_CREDITS_PER_MINUTE": str(10**9),
        "SANDBOX_CREDITS_PER_DAY": str(10**9),
        "SANDBOX_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "services.sandbox"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/__sandbox/health", timeout=1).raise_for_status()
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)  # waiting for a child process to bind, not synchronising tests
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3, help="batches of 120 symbols to time")
    args = parser.parse_args()
    batches = sample_batches(args.batches)
    served_bars = 0
    served_bytes = 0
    served_seconds = 0.0
    bodies: list[bytes] = []
    with sandbox_process() as url, requests.Session() as http:
        params = {"interval": "1h", "outputsize": BARS, "dp": 5, "apikey": "marketpipe-sandbox"}
        http.get(f"{url}/time_series", params={**params, "symbol": "SYN0001"}, timeout=60)
        for batch in batches:
            started = time.perf_counter()
            response = http.get(
                f"{url}/time_series",
                params={**params, "symbol": ",".join(batch)},
                timeout=300,
            )
            served_seconds += time.perf_counter() - started
            response.raise_for_status()
            served_bytes += len(response.content)
            bodies.append(response.content)
    # Count what actually arrived (outside the timed part): every symbol must be complete.
    for body in bodies:
        answer = json.loads(body)
        for symbol_body in answer.values():
            assert symbol_body["status"] == "ok", symbol_body
            served_bars += len(symbol_body["values"])
    assert served_bars == len(batches) * BATCH * BARS, served_bars

    # Baseline: encoding the same answers, already built as Python objects, with json.dumps.
    prebuilt = [json.loads(body) for body in bodies]
    started = time.perf_counter()
    for answer in prebuilt:
        json.dumps(answer, separators=(",", ":"))
    baseline_seconds = time.perf_counter() - started

    rate = served_bars / served_seconds
    baseline_rate = served_bars / baseline_seconds
    universe = SYNTHETIC_COUNT * BARS
    print(f"sandbox /time_series over HTTP, {len(batches)} batches x {BATCH} symbols x {BARS} bars")
    print(f"  bars served          : {served_bars:,} ({served_bytes / 1e6:,.1f} MB of JSON)")
    per_batch = served_seconds / len(batches)
    megabytes_per_second = served_bytes / served_seconds / 1e6
    print(f"  time                 : {served_seconds:.2f} s ({per_batch:.2f} s per batch)")
    print(f"  throughput           : {rate:,.0f} bars/s ({megabytes_per_second:,.1f} MB/s)")
    print(f"  baseline json.dumps of pre-built answers: {baseline_rate:,.0f} bars/s")
    print(f"  ratio sandbox / baseline: {rate / baseline_rate:.2f}x")
    print(
        f"  all {SYNTHETIC_COUNT:,} symbols x {BARS:,} bars ({universe:,} bars) at this rate: "
        f"{universe / rate:,.0f} s (one server process; from the measured rate, not timed)"
    )


if __name__ == "__main__":
    main()
