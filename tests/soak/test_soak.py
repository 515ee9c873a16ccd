"""The soak: the whole stack as real processes through a simulated month on an accelerated API.

The sandbox (its own process, clock at SPEED x real time), the fetcher's schedule, transformer
and loader workers, the streamer and the dashboard run against PostgreSQL and Redis through:

- **November 2026** (30 days, 29 Oct - 28 Nov): nights and weekends, the end of US daylight
  saving time (Sunday 1 Nov: New York goes from UTC-4 to UTC-5), Thanksgiving (Thursday 26 Nov,
  no session) and its 13:00 early close on Friday, a 4-for-1 AAPL split on Tuesday 17 Nov;
- **March 2026** (5 days, 5 - 10 Mar), a short second phase across the start of daylight saving
  time (Sunday 8 Mar, UTC-5 to UTC-4). The demo exchanges are US only and one calendar month
  cannot hold both US changes (March and November), so both are run and verified the same way.

All through, the API fails at the rates of SOAK_FAULTS: every HTTP fault of the sandbox's fault
matrix (tests/integration/reliability/test_bad_input.py), drawn at random with a fixed seed.
Each phase starts as an operator would: an empty database backfilled for a day, then the stack
runs; at the phase's end the API clock is frozen, the faults stop, and the test waits on
observable state (a tick after the freeze done, the queues drained, every restatement done).
It then asserts, per phase:

- the stored ``bars``, ``daily_bars`` and ``watermarks`` equal a clean backfill of the same span
  into a fresh database, row for row, every column but lineage (floats to 1e-9 relative):
  0 lost, 0 duplicated, 0 different;
- each stack process's RSS, sampled every RSS_EVERY_SECONDS, grows less than RSS_GROWTH after
  the first simulated day; its open file descriptors stay within FD_SLACK of the first day's
  most; the Redis db holds at most REDIS_MAX_BYTES and REDIS_MAX_KEYS.

Redis TTLs run on real time, so the settings that are days (payload blobs, the daily reference
refresh, a refused symbol's day off) are scaled by SPEED: a simulated week is still a week.
The table `make soak` prints (and writes to .soak/results.md) goes into the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from redis import Redis

from marketpipe.migrate import migrate
from marketpipe.settings import Settings
from marketpipe.ticks import LAST_TICK_KEY
from services.fetcher.series import parse_utc
from tests.integration.conftest import REPO_ROOT, run_service, server_urls, settings_env  # noqa: F401
from tests.integration.reliability.conftest import drained
from tests.support.compare import compare
from tests.support.processes import free_port, service_process, stop_with_sigterm
from tests.support.scratch import empty_claimed_redis, scratch_database, scratch_redis

SPEED = 3600.0  # API seconds per real second: a simulated hour each second
SYMBOLS = ("AAPL", "MSFT", "BTC/USD")
LIVE_SYMBOLS = ("BTC/USD",)
# Every HTTP fault of the matrix, as a rate per call (rate_limit on every endpoint).
SOAK_FAULTS = (
    "rate_limit@0.02:*,server_error@0.02,bad_gateway@0.01,slow@0.005,malformed_json@0.01,"
    "duplicate_bars@0.01,gaps@0.01,empty_values@0.01,unknown_symbol@0.005"
)
FAULT_SEED = 17
PLAN = (8, 800)  # the free plan's credits per minute and per day, on both sides
RSS_EVERY_SECONDS = 1.0
RSS_GROWTH = 0.10
FD_SLACK = 16
REDIS_MAX_BYTES = 64 * 2**20
REDIS_MAX_KEYS = 20_000
REPORT = REPO_ROOT / ".soak" / "results.md"
DIFF_EXAMPLES = 50  # rows of each kind per table described in .soak/results.json
STACK = ("transformer", "loader", "fetcher", "streamer", "dashboard")


@dataclass(frozen=True)
class Phase:
    name: str
    history_from: date  # the operator's first backfill starts here, and so does the clean one
    start: datetime  # the stack starts on this API time
    end: datetime  # the API clock is frozen here
    splits: str = ""


NOVEMBER = Phase(
    "Nov 2026: DST end, Thanksgiving, AAPL 4:1",
    date(2026, 10, 28),
    datetime(2026, 10, 29, 0, 30, tzinfo=UTC),
    datetime(2026, 11, 28, 0, 30, tzinfo=UTC),
    splits="AAPL@2026-11-17=4:1",
)
MARCH = Phase(
    "Mar 2026: DST start",
    date(2026, 3, 4),
    datetime(2026, 3, 5, 0, 30, tzinfo=UTC),
    datetime(2026, 3, 10, 0, 30, tzinfo=UTC),
)


@dataclass
class Sample:
    api_time: datetime
    rss: dict[str, int]  # bytes per process
    fds: dict[str, int]
    redis_bytes: int
    redis_keys: int


@dataclass
class PhaseResult:
    phase: Phase
    wall_seconds: float = 0.0
    ticks: int = 0
    payloads: int = 0
    fetch_errors: int = 0
    restatements: int = 0
    comparison: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # of rows lost, surplus or different
    samples: list[Sample] = field(default_factory=list)


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_usage(client: Redis) -> tuple[int, int]:
    """(bytes, keys) of this db alone: other sessions share the server."""
    keys = list(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key)
    return sum(n or 0 for n in pipe.execute()), len(keys)


class Sampler(threading.Thread):
    """RSS and fds of each process, Redis usage and the API's time, every RSS_EVERY_SECONDS."""

    def __init__(self, pids: dict[str, int], redis: Redis, clock_url: str) -> None:
        super().__init__(daemon=True)
        self.pids, self.redis, self.clock_url = pids, redis, clock_url
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(RSS_EVERY_SECONDS):  # a sampling period, not a sync
                now = datetime.fromisoformat(requests.get(self.clock_url, timeout=5).json()["now"])
                used, keys = redis_usage(self.redis)
                self.samples.append(
                    Sample(
                        now,
                        {n: proc_rss(p) for n, p in self.pids.items()},
                        {n: proc_fds(p) for n, p in self.pids.items()},
                        used,
                        keys,
                    )
                )
        except BaseException as exc:  # reported by the test
            self.error = exc


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(statement, params or None)
        rows = cur.fetchall()
    conn.close()
    return rows


def admin(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    answer = requests.request(method, f"{base}/__sandbox/{path}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def api_now(base: str) -> datetime:
    return datetime.fromisoformat(admin(base, "GET", "clock")["now"])


def wait_until(condition: Any, timeout: float, what: str, processes: dict[str, Any]) -> None:
    """Poll observable state until it holds; fail if a process died or the deadline passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        dead = {n: p.returncode for n, p in processes.items() if p.poll() is not None}
        assert not dead, f"died while waiting for {what}: {dead}"
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)  # polling interval, not synchronisation: the deadline decides


def settle_check(url: str, redis: Redis, settings: Settings, end: datetime) -> bool:
    """A tick named after the freeze is done, the queues are drained, no restatement is open."""
    last = parse_utc(redis.get(LAST_TICK_KEY))
    if last is None or last <= end or not drained(redis, settings):
        return False
    open_ = query(url, "SELECT count(*) FROM marketpipe.restatements WHERE status <> 'restated'")
    return open_ == [(0,)] and drained(redis, settings)


def soak_settings(database_url: str, redis_url: str, port: int) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        sandbox_url=f"http://127.0.0.1:{port}",
        sandbox_stream_url=f"ws://127.0.0.1:{port + 1}",
        symbols=SYMBOLS,
        # The operator backfills the phase's first day by hand, and the clean reference covers
        # the same span: no automatic backfill of new series to BACKFILL_SINCE (two years).
        backfill_since="none",
    )


def run_phase(phase: Phase, pg_url: str, redis_base: str, tmp_path: Path) -> PhaseResult:
    result = PhaseResult(phase)
    logs = tmp_path / phase.start.strftime("%Y%m")
    logs.mkdir()
    port = free_port()
    sandbox_url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        db_url = stack.enter_context(scratch_database(pg_url, prefix="marketpipe_soak"))
        redis_url = stack.enter_context(scratch_redis(redis_base))
        redis = Redis.from_url(redis_url)
        stack.callback(redis.close)
        settings = soak_settings(db_url, redis_url, port)
        migrate(settings)
        env = settings_env(
            settings,
            TWELVE_DATA_BASE_URL="",
            SANDBOX_URL=sandbox_url,
            SANDBOX_STREAM_URL=f"ws://127.0.0.1:{port + 1}",
            LIVE_SYMBOLS=",".join(LIVE_SYMBOLS),
            API_CREDITS_PER_MINUTE=PLAN[0],
            API_CREDITS_PER_DAY=PLAN[1],
            HTTP_TIMEOUT_SECONDS=1.0,
            RESTATEMENT_POLL_SECONDS=60,
            # Days in Redis TTLs (real seconds), scaled to the API's pace.
            BLOB_TTL_SECONDS=max(60, int(7 * 86_400 / SPEED)),
            REFERENCE_REFRESH_HOURS=24 / SPEED,
        )
        sandbox_env = {
            **env,
            "SANDBOX_PORT": str(port),
            "SANDBOX_CLOCK_START": phase.start.isoformat(),
            "SANDBOX_CLOCK_SPEED": "0",
            "SANDBOX_CREDITS_PER_MINUTE": str(PLAN[0]),
            "SANDBOX_CREDITS_PER_DAY": str(PLAN[1]),
            "SANDBOX_SPLITS": phase.splits,
            "SANDBOX_FAULT_SEED": str(FAULT_SEED),
            "SANDBOX_SLOW_SECONDS": "2",
            "SANDBOX_STREAM_TICK_SECONDS": "60",
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        processes["sandbox"] = stack.enter_context(
            service_process("services.sandbox", sandbox_env, logs / "sandbox.log")
        )

        def sandbox_up() -> bool:
            try:
                return requests.get(f"{sandbox_url}/__sandbox/health", timeout=2).ok
            except requests.RequestException:  # not up yet: refused, or too busy to answer
                return False

        wait_until(sandbox_up, 30, "the sandbox", processes)
        for name in ("transformer", "loader"):
            processes[name] = stack.enter_context(
                service_process(f"services.{name}", env, logs / f"{name}.log")
            )
        # Day one, as an operator starts: a backfill, on the frozen clock, waited until loaded.
        until = (phase.start + timedelta(days=1)).date().isoformat()
        run_service(
            "services.fetcher",
            *("backfill", "--since", phase.history_from.isoformat(), "--until", until, "--wait"),
            env=env,
            timeout=300,
        )

        started = time.monotonic()
        admin(sandbox_url, "POST", "faults", {"spec": SOAK_FAULTS})
        admin(sandbox_url, "POST", "clock", {"speed": SPEED})
        dashboard_port = free_port()
        for name, args in (
            ("fetcher", ()),
            ("streamer", ()),
            ("dashboard", (f"--server.port={dashboard_port}",)),
        ):
            processes[name] = stack.enter_context(
                service_process(f"services.{name}", env, logs / f"{name}.log", *args)
            )
        sampler = Sampler(
            {n: processes[n].pid for n in STACK}, redis, f"{sandbox_url}/__sandbox/clock"
        )
        sampler.start()
        span = (phase.end - phase.start).total_seconds() / SPEED
        wait_until(lambda: api_now(sandbox_url) >= phase.end, span * 1.5 + 60, "the end", processes)
        admin(sandbox_url, "POST", "clock", {"freeze": phase.end.isoformat()})
        admin(sandbox_url, "DELETE", "faults")
        wait_until(
            lambda: settle_check(db_url, redis, settings, phase.end),
            600,
            "a tick after the freeze, drained queues, restatements done",
            processes,
        )
        sampler.stop.set()
        sampler.join(timeout=30)
        assert sampler.error is None, sampler.error
        result.samples = sampler.samples
        result.wall_seconds = time.monotonic() - started
        for name in ("fetcher", "streamer", "dashboard", "transformer", "loader"):
            stop_with_sigterm(processes.pop(name), logs / f"{name}.log")
        [(result.ticks, result.fetch_errors)] = query(
            db_url,
            "SELECT count(*) FILTER (WHERE status <> 'skipped'), coalesce(sum(api_errors), 0)"
            " FROM marketpipe.pipeline_runs WHERE component = 'fetcher' AND run_id LIKE 'fetch:%'",
        )
        [(result.payloads,)] = query(db_url, "SELECT count(*) FROM marketpipe.raw_payloads")
        [(result.restatements,)] = query(db_url, "SELECT count(*) FROM marketpipe.restatements")
        faults_served = (logs / "sandbox.log").read_text().count("injecting fault")
        result.comparison["faults"] = faults_served

        # The clean backfill: the same span from the API as it answers at the end, no faults.
        empty_claimed_redis(redis)
        with scratch_database(pg_url, prefix="marketpipe_soakclean") as clean_url:
            clean = soak_settings(clean_url, redis_url, port)  # not model_copy: URLs are cached
            migrate(clean)
            clean_env = {**env, "DATABASE_URL": clean_url}
            end_until = (phase.end + timedelta(days=1)).date().isoformat()
            run_service(
                "services.fetcher",
                *("backfill", "--since", phase.history_from.isoformat(), "--until", end_until),
                "--no-wait",
                env=clean_env,
                timeout=600,
            )
            run_service("services.transformer", "--burst", env=clean_env, timeout=600)
            run_service("services.loader", "--burst", env=clean_env, timeout=600)
            counts, examples = compare(db_url, clean_url, examples=DIFF_EXAMPLES)
        result.comparison.update(counts)
        result.examples = examples
    return result


def memory_findings(result: PhaseResult) -> dict[str, dict[str, float]]:
    """Per process: RSS at the end of day one, the most after it, growth; fds; Redis."""
    day_one = result.phase.start + timedelta(days=1)
    first = [s for s in result.samples if s.api_time < day_one]
    after = [s for s in result.samples if s.api_time >= day_one]
    assert first and after, "the run must sample both the first day and the rest"
    out: dict[str, dict[str, float]] = {}
    for name in STACK:
        baseline = after[0].rss[name]
        out[name] = {
            "rss_day1_mb": baseline / 2**20,
            "rss_max_mb": max(s.rss[name] for s in after) / 2**20,
            "growth": max(s.rss[name] for s in after) / baseline - 1,
            "fds_day1": max(s.fds[name] for s in first),
            "fds_max": max(s.fds[name] for s in after),
        }
    out["redis"] = {
        "bytes_max": max(s.redis_bytes for s in result.samples),
        "keys_max": max(s.redis_keys for s in result.samples),
    }
    return out


def table(results: list[PhaseResult]) -> str:
    lines = [
        "| phase | simulated | wall | ticks | payloads | API faults | restatements"
        " | rows compared | lost | duplicated | different |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.comparison
        days = (r.phase.end - r.phase.start).total_seconds() / 86_400
        lines.append(
            f"| {r.phase.name} | {days:.0f} days | {r.wall_seconds / 60:.1f} min | {r.ticks}"
            f" | {r.payloads} | {c['faults']} | {r.restatements} | {c['rows']} | {c['lost']}"
            f" | {c['duplicated']} | {c['different']} |"
        )
    lines += [
        "",
        "| phase | process | RSS end of day 1 | RSS max after | growth | fds day 1 / after |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        found = memory_findings(r)
        for name in STACK:
            m = found[name]
            lines.append(
                f"| {r.phase.name} | {name} | {m['rss_day1_mb']:.0f} MB | {m['rss_max_mb']:.0f} MB"
                f" | {m['growth'] * 100:+.1f} % | {m['fds_day1']:.0f} / {m['fds_max']:.0f} |"
            )
        redis = found["redis"]
        lines.append(
            f"| {r.phase.name} | Redis db | {redis['bytes_max'] / 2**20:.1f} MB max"
            f" | {redis['keys_max']:.0f} keys max | | |"
        )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def soak_began() -> float:
    """When the module's first phase began: `make soak` runs both in under 30 minutes."""
    return time.monotonic()


@pytest.fixture(scope="module")
def results() -> Iterator[list[PhaseResult]]:
    done: list[PhaseResult] = []
    yield done
    if done:
        text = table(done)
        print("\nsoak results\n\n" + text)
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(text + "\n")
        (REPORT.parent / "results.json").write_text(
            json.dumps(
                [
                    {
                        "phase": r.phase.name,
                        "wall_seconds": r.wall_seconds,
                        **r.comparison,
                        "examples": r.examples,
                    }
                    for r in done
                ]
            )
        )


@pytest.mark.parametrize("phase", [NOVEMBER, MARCH], ids=["november", "march"])
def test_a_simulated_month_ends_equal_to_a_clean_backfill_with_flat_memory(
    phase: Phase,
    server_urls: tuple[str, str],  # noqa: F811
    tmp_path: Path,
    results: list[PhaseResult],
    soak_began: float,
) -> None:
    """See the module docstring: one phase (``-k november`` or ``-k march``), verified."""
    r = run_phase(phase, server_urls[0], server_urls[1], tmp_path)
    results.append(r)
    c = r.comparison
    assert c["rows"] > 0, r.phase.name
    assert (c["lost"], c["duplicated"], c["different"]) == (0, 0, 0), (r.phase, r.examples)
    found = memory_findings(r)
    for name in STACK:
        m = found[name]
        assert m["growth"] < RSS_GROWTH, (r.phase.name, name, m)
        assert m["fds_max"] <= m["fds_day1"] + FD_SLACK, (r.phase.name, name, m)
    assert found["redis"]["bytes_max"] <= REDIS_MAX_BYTES, found["redis"]
    assert found["redis"]["keys_max"] <= REDIS_MAX_KEYS, found["redis"]
    assert r.comparison["faults"] > 0, "the API must have failed along the way"
    if phase.splits:
        assert r.restatements >= 1, "the split must be restated"
    assert time.monotonic() - soak_began < 30 * 60, "make soak's phases take under 30 minutes"
