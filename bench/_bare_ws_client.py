"""The benchmark's baseline: a bare ``websockets`` client of the price stream (nothing else).

``python bench/_bare_ws_client.py URL SYMBOLS EXPECTED REPORT``: subscribes, reads price events
until EXPECTED, writes received count, per-tick latencies (when BENCH_CLOCK_OFFSET maps sandbox
time to wall time), CPU seconds from the first tick and peak RSS to REPORT as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect


async def bare_client(url: str, symbols: str, expected: int, report: str) -> None:
    received, latencies, cpu_start = 0, [], 0.0
    offset = float(os.environ.get("BENCH_CLOCK_OFFSET", "nan"))
    async with connect(url, ping_interval=None) as websocket:
        await websocket.send(json.dumps({"action": "subscribe", "params": {"symbols": symbols}}))
        async for message in websocket:
            event = json.loads(message)
            if event.get("event") != "price":
                continue
            received += 1
            if received == 1:
                cpu_start = time.process_time()
            if offset == offset:  # latency mode: sandbox time -> wall time
                latencies.append(time.time() - (event["timestamp"] - offset))
            if received >= expected:
                break
    cpu = time.process_time() - cpu_start
    # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts from its parent's
    status = Path("/proc/self/status").read_text().splitlines()
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    report_data = {"received": received, "latencies": latencies, "cpu": cpu, "rss": rss}
    Path(report).write_text(json.dumps(report_data))


if __name__ == "__main__":
    url, symbols, expected, report = sys.argv[1:5]
    asyncio.run(bare_client(url, symbols, int(expected), report))
