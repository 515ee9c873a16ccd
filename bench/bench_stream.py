"""Live prices: tick -> Redis and tick -> dashboard strip latency; the streamer's CPU and memory.

Real processes: the sandbox's WebSocket stream (in this process, its clock set to a past stock
session), ``python -m services.streamer`` writing a scratch Redis db and a scratch database.

1. Latency, at real speed, 50 symbols (47 stocks + 3 crypto, 50 ticks/s): a tick's emission
   time is its sandbox timestamp mapped to wall time (the clock runs at speed 1 from a known
   anchor); "Redis" is when a 5 ms poll of the latest-price hash first sees it; "strip" is when
   the dashboard strip's data path (services.dashboard.live: status + latest + frame), run every
   STRIP_SECONDS as its fragment is, first shows it. Goal: median and p95 within 1 s.
   Baseline in the same run: a bare ``websockets`` client's receive latency on the same stream
   (what the sandbox and the socket cost before the streamer does anything).
2. A simulated hour of 50 symbols (180,000 ticks) replayed at SPEED x: the streamer's CPU
   seconds (utime + stime from /proc) and peak RSS, against the bare client's on the same hour.

Run: ``.venv/bin/python bench/bench_stream.py [--latency-seconds 20] [--speed 60]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from redis import Redis

from marketpipe.live import LATEST_KEY
from marketpipe.migrate import migrate
from marketpipe.settings import Settings
from services.dashboard import live
from services.sandbox.app import SandboxServer
from services.sandbox.calendar import session_table
from services.sandbox.settings import SandboxSettings
from services.sandbox.ticks import TickSource
from tests.support.scratch import scratch_database, scratch_redis

REPO_ROOT = Path(__file__).resolve().parent.parent
BARE_CLIENT = Path(__file__).resolve().parent / "_bare_ws_client.py"
KEY = "bench-stream-key"
SYMBOLS = (*(f"SYN{n:04d}" for n in range(1, 48)), "BTC/USD", "ETH/USD", "SOL/USD")
GOAL_SECONDS = 1.0  # on the median; the p95 is reported beside it
VIEWERS = 10
CLK_TCK = os.sysconf("SC_CLK_TCK")


def session_hour() -> datetime:
    """The start of the second hour of the latest stock session that ended over a day ago."""
    table = session_table("XNYS")
    cutoff = time.time() - 86400
    index = int(np.searchsorted(table.close_s, cutoff)) - 1
    return datetime.fromtimestamp(int(table.open_s[index]) + 3600, UTC)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# -- the baseline: a bare websockets client ----------------------------------------------------


def bare_client(
    url: str, expected: int, report: Path, offset: float | None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if offset is not None:
        env["BENCH_CLOCK_OFFSET"] = repr(offset)
    return subprocess.Popen(
        [
            sys.executable,
            str(BARE_CLIENT),
            url,
            ",".join(SYMBOLS),
            str(expected),
            str(report),
        ],
        env=env,
        cwd=REPO_ROOT,
    )


# -- the streamer --------------------------------------------------------------------------


@contextmanager
def streamer_process(
    settings: Settings, stream_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWELVE_DATA_", "SANDBOX_", "LIVE_"))
    }
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        SYMBOLS=",".join(SYMBOLS),
        LIVE_MAX_SYMBOLS=str(len(SYMBOLS)),
        TWELVE_DATA_STREAM_URL=stream_url,
        SANDBOX_API_KEY=KEY,
        LOG_LEVEL="WARNING",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.streamer"],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=out,
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def subscribed(redis: Redis) -> bool:
    return redis.hget("marketpipe:live:status", "state") == b"subscribed"


# -- 1. latency ----------------------------------------------------------------------------


def latency(settings: Settings, seconds: float, workdir: Path) -> None:
    start = session_hour()
    sandbox = SandboxServer(
        SandboxSettings(port=0, api_keys=(KEY,), clock_start=start.isoformat(), clock_speed=0)
    )
    sandbox.start()
    url = f"{sandbox.stream_url}?apikey={KEY}"
    redis = Redis.from_url(settings.redis_url)
    try:
        with streamer_process(settings, sandbox.stream_url, workdir / "latency.log") as process:
            wait_until(lambda: subscribed(redis), 30, "the streamer to subscribe")
            offset = start.timestamp() - time.time()
            sandbox.clock.set(datetime.fromtimestamp(time.time() + offset, UTC), speed=1.0)
            expected = int(seconds) * len(SYMBOLS)
            bare = bare_client(url, expected, workdir / "bare-latency.json", offset)
            redis_latency, strip_latency = poll(settings, redis, offset, seconds)
            bare.wait(timeout=seconds + 30)
            assert process.poll() is None, "the streamer exited"
    finally:
        sandbox.stop()
        redis.close()
    baseline = json.loads((workdir / "bare-latency.json").read_text())["latencies"]
    count = len(SYMBOLS)
    print(f"latency over {seconds:.0f} s at real speed, {count} symbols ({count} ticks/s)")
    goal = f"goal: median <= {GOAL_SECONDS * 1000:.0f} ms"
    print(f"  {'path':<38} {'n':>6} {'median ms':>10} {'p95 ms':>8}  {goal}")
    rows = (
        ("baseline: bare websockets client", baseline),
        ("tick -> Redis (streamer)", redis_latency),
        (f"tick -> strip ({VIEWERS} viewers, {live.STRIP_SECONDS:g} s)", strip_latency),
    )
    for name, values in rows:
        median, p95 = statistics.median(values) * 1000, pct(values, 95) * 1000
        flag = "" if name.startswith("baseline") or median <= GOAL_SECONDS * 1000 else "  OVER"
        print(f"  {name:<38} {len(values):6d} {median:10.1f} {p95:8.1f}{flag}")
    if os.environ.get("BENCH_STREAM_DUMP"):
        Path(os.environ["BENCH_STREAM_DUMP"]).write_text(json.dumps(redis_latency))
    ratio = statistics.median(redis_latency) / statistics.median(baseline)
    print(f"  tick -> Redis median = {ratio:.2f} x the bare client's receive latency")


def poll(
    settings: Settings, redis: Redis, offset: float, seconds: float
) -> tuple[list[float], list[float]]:
    """Poll Redis every 5 ms (tick -> Redis); run the strip's data path every STRIP_SECONDS.

    The sandbox's ticks all fall on whole seconds, so one periodic viewer would see a constant
    latency set by its phase. VIEWERS viewers with phases spread evenly over the period stand
    for browser sessions opened at arbitrary moments.
    """
    seen: dict[str, float] = {}
    redis_latency: list[float] = []
    strip_latency: list[float] = []
    stop = threading.Event()

    def strip_poller() -> None:
        shown: list[dict[str, float]] = [{} for _ in range(VIEWERS)]
        client = live.connect(settings.redis_url)
        step = live.STRIP_SECONDS / VIEWERS
        due, viewer = time.monotonic(), 0
        while not stop.is_set():
            now = time.time()
            status = live.read_status(client, now)
            latest = live.read_latest(client, SYMBOLS)
            frame = live.strip_frame(SYMBOLS, latest, {}, status, now)
            done = time.time()
            for symbol, tick in latest.items():
                if shown[viewer].get(symbol) != tick.timestamp:
                    shown[viewer][symbol] = tick.timestamp
                    strip_latency.append(done - (tick.timestamp - offset))
            assert len(frame) == len(SYMBOLS)
            due, viewer = due + step, (viewer + 1) % VIEWERS
            stop.wait(max(0.0, due - time.monotonic()))
        client.close()

    thread = threading.Thread(target=strip_poller, daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = time.time()
        for symbol, raw in redis.hgetall(LATEST_KEY).items():
            stamp = json.loads(raw)["timestamp"]
            if seen.get(symbol.decode()) != stamp:
                seen[symbol.decode()] = stamp
                redis_latency.append(now - (stamp - offset))
        time.sleep(0.005)
    stop.set()
    thread.join()
    return redis_latency, strip_latency


# -- 2. a simulated hour -----------------------------------------------------------------


def replay_hour(
    settings: Settings, who: str, start: datetime, expected: int, speed: float, workdir: Path
) -> tuple[int, float, float, float]:
    """(ticks, CPU seconds, peak RSS MiB, wall seconds) of one process over the hour."""
    sandbox = SandboxServer(
        SandboxSettings(port=0, api_keys=(KEY,), clock_start=start.isoformat(), clock_speed=0)
    )
    sandbox.start()
    url = f"{sandbox.stream_url}?apikey={KEY}"
    redis = Redis.from_url(settings.redis_url)
    redis.delete(LATEST_KEY, "marketpipe:live:status")
    began = time.monotonic()
    timeout = 3600 / speed + 120
    try:
        if who == "bare client":
            client = bare_client(url, expected, workdir / "bare-hour.json", None)
            wait_until(lambda: sandbox.stream.subscriptions == len(SYMBOLS), 30, "the client")
            sandbox.clock.set_speed(speed)
            wait_until(lambda: client.poll() is not None, timeout, "the bare client")
            report = json.loads((workdir / "bare-hour.json").read_text())
            return report["received"], report["cpu"], report["rss"], time.monotonic() - began
        with streamer_process(settings, sandbox.stream_url, workdir / "hour.log") as process:
            wait_until(lambda: subscribed(redis), 30, "the streamer to subscribe")
            cpu_before = cpu_seconds(process.pid)
            sandbox.clock.set_speed(speed)

            def done() -> bool:
                raw = redis.hget("marketpipe:live:status", "counters")
                return raw is not None and json.loads(raw).get("accepted", 0) >= expected

            wait_until(done, timeout, "every tick of the hour")
            cpu = cpu_seconds(process.pid) - cpu_before
            return expected, cpu, peak_rss_mib(process.pid), time.monotonic() - began
    finally:
        sandbox.stop()
        redis.close()


def simulated_hour(settings: Settings, speed: float, workdir: Path) -> None:
    start = session_hour()
    end = start + timedelta(hours=1)
    expected = sum(
        len(TickSource(s, 1).between(int(start.timestamp()), int(end.timestamp()))) for s in SYMBOLS
    )
    results = {who: replay_hour(settings, who, start, expected, speed, workdir)
               for who in ("bare client", "streamer")}  # fmt: skip
    print(f"\na simulated hour: {len(SYMBOLS)} symbols, {expected:,} ticks, replayed at {speed:g}x")
    header = f"{'ticks':>9} {'CPU s':>7} {'CPU %':>6} {'peak RSS MiB':>13} {'wall s':>7}"
    print(f"  {'process':<14} {header}")
    for who, (received, cpu, rss, wall) in results.items():
        print(
            f"  {who:<14} {received:9,d} {cpu:7.2f} {100 * cpu / wall:6.1f} {rss:13.1f} {wall:7.1f}"
        )
    streamer_cpu, bare_cpu = results["streamer"][1], results["bare client"][1]
    print(f"  streamer CPU = {streamer_cpu / bare_cpu:.2f} x the bare client's on the same hour;"
          f" {1e6 * streamer_cpu / expected:.0f} us per tick;"
          f" at real speed that is {100 * streamer_cpu / 3600:.2f} % of a core")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--speed", type=float, default=60.0)
    args = parser.parse_args()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_stream_{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    server = Settings()
    pg_server = server.admin_url.set(database="postgres").render_as_string(hide_password=False)
    with (
        scratch_database(pg_server, prefix="marketpipe_bench") as db,
        scratch_redis(server.redis_url) as redis_url,
    ):
        settings = Settings(database_url=db, redis_url=redis_url)
        migrate(settings)
        latency(settings, args.latency_seconds, workdir)
        simulated_hour(settings, args.speed, workdir)


if __name__ == "__main__":
    main()
