"""Transformer on the shapes production sends, against a plain per-series pandas baseline.

Run: .venv/bin/python -m bench.bench_transform [--quick] [--jobs-only]

Every transform job carries one payload (one symbol, one interval), so every shape is a loop of
``transform_series`` calls, one per payload, as the workers run them:
- one payload of 5,000 hourly bars (a stock on the NYSE 1h session);
- an hourly tick: 50 payloads of 27 bars (the gap since the watermark plus FETCH_OVERLAP_BARS), each
  continuing ~2,000 stored bars read as the history query returns them (marketpipe/history.py;
  the query itself is I/O and not timed), half stocks, half crypto without volume;
- a backfill: 20 symbols x 12 windows of 5,000 bars, each window's first 300 bars its warm-up
  (dropped: the indicators continue the stored series, and a window loaded before the older
  ones is recomputed by the loader when they land).

The baseline, timed in the same run on the same payloads, is ``pandas_baseline`` below: the
straightforward pandas code one would write first for the same path (``pd.DataFrame`` of the
JSON values, ``to_numeric`` / ``to_datetime`` / ``tz_localize``, ``rolling`` / ``ewm`` /
``groupby`` for the indicators and the days, warm-up dropped first), without the quarantine reasons,
the DST rule for repeated hours or the completeness flag. For the tick it recomputes the whole
stored series plus the new bars and keeps the new ones: the plain way to continue a series.
Before timing, the bench checks that the baseline computes the same indicators (1e-9), so the
comparison is like for like.

Ours is ``transform_series`` and the batch's Arrow tables it hands the job (what the loader
reads). Last, the whole job (``services.transformer.jobs.transform``) runs in this process on a
scratch database and Redis db (TEST_DATABASE_URL / TEST_REDIS_URL, as the tests): the tick's 50
jobs, each reading its payload and stored history from Postgres and writing its batch to Redis,
with the CPU and wall time of each step (``--jobs-only``: that part alone).

Figures: best of several repeats, wall-clock and process CPU time (on a shared, loaded machine
the CPU figure is the honest one; wall time then includes waiting for a core).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from redis import Redis
from rq import Queue

from marketpipe import broker, raw
from marketpipe.contract import RawPayload
from marketpipe.history import history_from
from marketpipe.indicators import STATE_COLUMNS
from marketpipe.market import bars_per_year, venue
from marketpipe.migrate import migrate
from marketpipe.settings import Settings
from services.loader.jobs import load
from services.transformer import jobs as transformer_jobs
from services.transformer.transform import HistoryReader, transform_series
from tests.support.scratch import scratch_database, scratch_redis

OVERLAP_BARS: int = Settings.model_fields["fetch_overlap_bars"].default

NOW = datetime(2040, 1, 1, tzinfo=UTC)
STOCK_META = {
    "interval": "1h",
    "currency": "USD",
    "exchange_timezone": "America/New_York",
    "exchange": "NASDAQ",
    "mic_code": "XNGS",
    "type": "Common Stock",
}
CRYPTO_META = {
    "interval": "1h",
    "currency_base": "Coin",
    "currency_quote": "US Dollar",
    "exchange": "Binance",
    "type": "Digital Currency",
}
CHECKED_COLUMNS = ("sma_20", "sma_200", "ema_26", "macd_signal", "rsi_14", "bb_upper", "atr_14")


def stock_times(count: int, first_day: str) -> list[str]:
    """NYSE 1h bar open times (09:30 .. 15:30) on consecutive weekdays."""
    days = pd.bdate_range(first_day, periods=count // 7 + 2)
    stamps = (days.values[:, None] + pd.to_timedelta(np.arange(7) * 60 + 570, "m").values).ravel()
    return [str(t)[:19].replace("T", " ") for t in stamps[:count]]


def crypto_times(count: int, first_day: str) -> list[str]:
    stamps = np.datetime64(first_day) + np.arange(count) * np.timedelta64(1, "h")
    return [str(t).replace("T", " ") for t in stamps]


def make_payload(
    k: int, kind: str, bars: int, *, first_day: str, warmup: int | None, seed: int
) -> RawPayload:
    """One realistic API answer (text numbers, newest first); ``warmup`` bars before since."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
    open_ = close * np.exp(rng.normal(0, 0.003, bars))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.004, bars))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.004, bars))
    times = (stock_times if kind == "stock" else crypto_times)(bars, first_day)
    columns = [times, *([f"{v:.5f}" for v in x] for x in (open_, high, low, close))]
    keys = ["datetime", "open", "high", "low", "close"]
    if kind == "stock":
        columns.append([str(v) for v in rng.integers(1_000, 1_000_000, bars)])
        keys.append("volume")
    values: list[dict[str, Any]] = [
        dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)
    ]
    values.reverse()  # the API's default order: newest first
    symbol = f"S{k:04d}" if kind == "stock" else f"C{k:04d}/USD"
    meta = {**(STOCK_META if kind == "stock" else CRYPTO_META), "symbol": symbol}
    request: dict[str, Any] = {"symbol": symbol, "interval": "1h", "outputsize": 5000}
    if warmup is not None:
        zone = "America/New_York" if kind == "stock" else "UTC"
        since = pd.Timestamp(times[warmup], tz=zone).tz_convert("UTC")
        request["since"] = since.isoformat()
    return RawPayload.model_construct(
        payload_id=f"bench{seed:06d}",
        source="demo",
        endpoint="time_series",
        symbol=symbol,
        interval="1h",
        fetched_at=NOW - timedelta(days=1),
        request=request,
        body={"meta": meta, "values": values, "status": "ok"},
        instrument={},
    )


def newest(payload: RawPayload, count: int) -> RawPayload:
    """The answer to a request for only the newest ``count`` bars of the same series."""
    request = {**payload.request, "outputsize": count}
    body = {**payload.body, "values": payload.body["values"][:count]}
    return payload.model_copy(update={"request": request, "body": body})


def stored_history(payload: RawPayload) -> pa.Table:
    """The series as loaded, in the columns the history query returns for it."""
    bars = transform_series(payload, now=NOW).bars
    columns = ["bar_time", "trading_date", "high", "low", "close", "volume", *STATE_COLUMNS]
    table = pa.Table.from_pandas(bars[columns], preserve_index=False)
    table = table.set_column(1, "trading_date", table["trading_date"].cast(pa.date32()))
    first = table["bar_time"][0]
    version = pa.array([1] * table.num_rows, pa.int64())
    starts = pa.array([first.as_py()] * table.num_rows, table["bar_time"].type)
    return table.add_column(0, "series_start", starts).add_column(0, "version", version)


@dataclass(frozen=True)
class Job:
    """One transform job, and the baseline's way to the same bars."""

    payload: RawPayload
    history: HistoryReader | None = None
    baseline_payload: RawPayload | None = None  # the whole series, when the job continues one

    def ours(self) -> dict[str, pa.Table]:
        """What the job sends to the loader: the batch's tables."""
        return transform_series(self.payload, now=NOW, history=self.history).tables()

    def ours_frame(self) -> pd.DataFrame:
        return transform_series(self.payload, now=NOW, history=self.history).bars

    def baseline(self) -> pd.DataFrame:
        if self.baseline_payload is None:
            return pandas_baseline(self.payload)
        return pandas_baseline(self.baseline_payload).tail(len(self.payload.body["values"]))


def tick_job(k: int, stored_bars: int, tick_bars: int) -> Job:
    """A steady tick's job: the newest ``tick_bars`` of a series whose older bars are stored."""
    kind = "stock" if k % 2 == 0 else "crypto"
    whole = make_payload(
        k, kind, stored_bars + tick_bars, first_day="2025-06-02", warmup=None, seed=100 + k
    )
    tick = newest(whole, tick_bars)
    # What the loader stored before this tick: the series up to the tick's first bar.
    before = whole.model_copy(
        update={"body": {**whole.body, "values": whole.body["values"][tick_bars:]}}
    )
    table = stored_history(before)
    return Job(tick, history=lambda _first: history_from(table), baseline_payload=whole)


# --- the baseline: plain pandas, one series ----------------------------------------------------


def seeded_ewm(x: pd.Series, n: int, alpha: float) -> pd.Series:
    """EWM seeded with the mean of the first n defined values (the TA-Lib convention)."""
    position = int(x.notna().to_numpy().argmax())  # the first defined value (0 if none)
    y = x.copy()
    y.iloc[position + n - 1] = x.iloc[position : position + n].mean()
    y.iloc[: position + n - 1] = np.nan
    return y.ewm(alpha=alpha, adjust=False).mean()


def pandas_baseline(payload: RawPayload) -> pd.DataFrame:
    """The same path written the first way that comes to mind (daily bars are the loader's)."""
    meta = payload.body["meta"]
    g = pd.DataFrame(payload.body["values"])
    for name in ("open", "high", "low", "close", "volume"):
        g[name] = pd.to_numeric(g[name], errors="coerce") if name in g else np.nan
    local = pd.to_datetime(g["datetime"])
    zone = meta.get("exchange_timezone")
    g["bar_time"] = (
        local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
        if zone
        else local.dt.tz_localize("UTC")
    )
    g["bar_time_local"] = local
    g = g.dropna(subset=["bar_time", "open", "high", "low", "close"])
    g = g.sort_values("bar_time").drop_duplicates("bar_time", keep="last")
    since = payload.request.get("since")
    if since:  # the window's warm-up: its indicators come from the stored series, not from it
        g = g[g["bar_time"] >= pd.Timestamp(since)]
    g = g.reset_index(drop=True)
    close, high, low = g["close"], g["high"], g["low"]
    prev = close.shift(1)
    g["previous_close"] = prev
    g["change"] = close - prev
    g["pct_change"] = (close - prev) / prev * 100
    g["log_return"] = np.log(close / prev)
    for n in (20, 50, 200):
        g[f"sma_{n}"] = close.rolling(n).mean()
    g["ema_12"] = seeded_ewm(close, 12, 2 / 13)
    g["ema_26"] = seeded_ewm(close, 26, 2 / 27)
    g["macd"] = g["ema_12"] - g["ema_26"]
    g["macd_signal"] = seeded_ewm(g["macd"], 9, 2 / 10)
    g["macd_hist"] = g["macd"] - g["macd_signal"]
    delta = close.diff()
    gain = seeded_ewm(delta.clip(lower=0), 14, 1 / 14)
    loss = seeded_ewm((-delta).clip(lower=0), 14, 1 / 14)
    g["rsi_14"] = (100 * gain / (gain + loss)).where(gain + loss != 0, 50.0).where(gain.notna())
    mid, sd = close.rolling(20).mean(), close.rolling(20).std(ddof=0)
    g["bb_middle"], g["bb_upper"], g["bb_lower"] = mid, mid + 2 * sd, mid - 2 * sd
    tr = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1)
    g["atr_14"] = seeded_ewm(tr.max(axis=1, skipna=False), 14, 1 / 14)
    kind = "stock" if zone else "crypto"
    annualise = np.sqrt(bars_per_year(payload.interval, venue(kind, zone)))
    g["volatility_20"] = g["log_return"].rolling(20).std() * annualise
    g["trading_date"] = g["bar_time_local"].dt.normalize()
    typical_volume = (high + low + close) / 3 * g["volume"]
    by_day = g.groupby("trading_date")
    g["vwap_session"] = (
        typical_volume.groupby(g["trading_date"]).cumsum() / by_day["volume"].cumsum()
    )
    indexed = g.set_index("bar_time")
    g["high_52w"] = indexed["high"].rolling("364D", closed="both").max().to_numpy()
    g["low_52w"] = indexed["low"].rolling("364D", closed="both").min().to_numpy()
    young = g["bar_time"] - pd.Timedelta(weeks=52) < g["bar_time"].iloc[0]
    g.loc[young, ["high_52w", "low_52w"]] = np.nan
    g["pct_from_52w_high"] = (close / g["high_52w"] - 1) * 100
    g["pct_from_52w_low"] = (close / g["low_52w"] - 1) * 100
    return g


# --- timing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Best wall-clock and best process CPU time over the repeats, in seconds."""

    wall: float
    cpu: float


def best_of(repeats: int, func: Callable[[], object]) -> Timing:
    wall = cpu = float("inf")
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        func()
        cpu = min(cpu, time.process_time() - cpu_start)
        wall = min(wall, time.perf_counter() - wall_start)
    return Timing(wall, cpu)


def check_like_for_like(job: Job) -> None:
    """The baseline and transform_series agree on the indicators of the emitted bars."""
    ours, theirs = job.ours_frame(), job.baseline()
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    for name in CHECKED_COLUMNS:
        np.testing.assert_allclose(
            ours[name].to_numpy(), theirs[name].to_numpy(), rtol=1e-9, atol=0, err_msg=name
        )


def run_shape(label: str, jobs: list[Job], repeats: int) -> Timing:
    bars = sum(len(j.payload.body["values"]) for j in jobs)
    print(f"\n== {label}: {len(jobs)} payload(s), {bars:,} bars in")
    check_like_for_like(jobs[0])
    check_like_for_like(jobs[-1])
    ours = best_of(repeats, lambda: [j.ours() for j in jobs])
    baseline = best_of(repeats, lambda: [j.baseline() for j in jobs])
    print(f"   best of {repeats}            wall s    cpu s   M bars/s (cpu)")
    for name, timing in (("transform_series", ours), ("pandas baseline", baseline)):
        print(f"   {name:<20} {timing.wall:8.3f} {timing.cpu:8.3f} {bars / timing.cpu / 1e6:9.3f}")
    print(
        f"   transform_series vs baseline: {baseline.wall / ours.wall:.2f}x wall,"
        f" {baseline.cpu / ours.cpu:.2f}x cpu (higher is faster)"
    )
    return ours


# --- the whole job: Postgres in, Redis out, in this process -----------------------------------


@dataclass
class Breakdown:
    """Exclusive CPU and wall time of the job's steps (without the steps each one calls)."""

    cpu: dict[str, float] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)
    _stack: list[list[float]] = field(default_factory=list)

    def wrap(self, owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([0.0, 0.0])
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                nested_cpu, nested_wall = self._stack.pop()
                self.cpu[label] = self.cpu.get(label, 0.0) + cpu - nested_cpu
                self.wall[label] = self.wall.get(label, 0.0) + wall - nested_wall
                if self._stack:
                    self._stack[-1][0] += cpu
                    self._stack[-1][1] += wall

        setattr(owner, name, timed)


@contextmanager
def job_stack() -> Iterator[Settings]:
    """A migrated scratch database and a scratch Redis db, with settings pointing at them."""
    pg = os.environ.get("TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_base = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    with ExitStack() as stack:
        db_url = stack.enter_context(scratch_database(pg, prefix="marketpipe_bench"))
        migrate(Settings(database_url=db_url))
        redis_url = stack.enter_context(scratch_redis(redis_base))
        yield Settings(database_url=db_url, redis_url=redis_url, log_level="WARNING")


def run_jobs(tick_payloads: int, tick_bars: int, repeats: int) -> Timing:
    """The tick's transform jobs (``services.transformer.jobs.transform``) end to end.

    Each series' older bars are stored through the loader's own job first; the timed part is
    what a work horse does for a job after RQ hands it over: read the payload by id and the
    stored history from Postgres, transform, write the batch to Redis, enqueue the load.
    """
    with job_stack() as settings:
        ids = []
        for k in range(tick_payloads):
            kind = "stock" if k % 2 == 0 else "crypto"
            whole = make_payload(
                k,
                kind,
                2_000 + 7 * k + tick_bars,
                first_day="2025-06-02",
                warmup=None,
                seed=100 + k,
            )
            values = whole.body["values"]
            before = RawPayload.build(
                source="demo",
                symbol=whole.symbol,
                interval="1h",
                body={**whole.body, "values": values[tick_bars:]},
                request=whole.request,
                fetched_at=whole.fetched_at,
            )
            tick = RawPayload.build(
                source="demo",
                symbol=whole.symbol,
                interval="1h",
                body={**whole.body, "values": values[:tick_bars]},
                request={**whole.request, "outputsize": tick_bars, "watermark": "stored"},
                fetched_at=whole.fetched_at,
            )
            for payload in (before, tick):
                raw.land_payload(settings.role_url("fetcher"), payload)
            transformer_jobs.transform(settings, before.payload_id)
            load(settings, before.payload_id)
            ids.append(tick.payload_id)
        redis = Redis.from_url(settings.redis_url)
        print(f"\n== the tick's transform jobs in-process: {len(ids)} jobs x {tick_bars} bars")
        # Warm the process (imports, the ADBC database object) as a worker is before its jobs.
        transformer_jobs.transform(settings, ids[0])
        steps = Breakdown()
        steps.wrap(raw, "read_payload", "read payload (pooled psycopg2, SELECT)")
        steps.wrap(transformer_jobs, "adbc_connect", "connect (ADBC)")
        steps.wrap(transformer_jobs, "read_history", "read history (SELECT)")
        steps.wrap(transformer_jobs, "transform_series", "transform_series")
        steps.wrap(broker, "put_batch", "serialise + write the batch (Redis)")
        steps.wrap(Queue, "enqueue", "enqueue the load (RQ)")
        timing = best_of(repeats, lambda: [transformer_jobs.transform(settings, i) for i in ids])
        rounds = repeats
        print(
            f"   best of {repeats}: {timing.wall:.3f} s wall, {timing.cpu:.3f} s cpu;"
            f" {timing.cpu / len(ids) * 1e3:.1f} ms cpu a job"
        )
        print("   step (mean a job over all rounds)          cpu ms   wall ms")
        total_cpu = sum(steps.cpu.values())
        per_job_ms = 1e3 / rounds / len(ids)
        for label, cpu in steps.cpu.items():
            print(f"   {label:<42} {cpu * per_job_ms:7.2f} {steps.wall[label] * per_job_ms:8.2f}")
        rest = timing.cpu - total_cpu / rounds
        print(
            f"   {'the rest of the job (cpu of the best round)':<42} {rest / len(ids) * 1e3:7.2f}"
        )
        redis.close()
        return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller shapes, one repeat")
    parser.add_argument("--jobs-only", action="store_true", help="only the whole-job figures")
    args = parser.parse_args()
    tick_payloads, symbols, windows, repeats = (10, 2, 3, 1) if args.quick else (50, 20, 12, 3)
    if args.jobs_only:
        run_jobs(tick_payloads, 3 + OVERLAP_BARS, repeats)
        return
    start = time.perf_counter()
    single = [Job(make_payload(0, "stock", 5_000, first_day="2022-01-03", warmup=None, seed=1))]
    tick_bars = 3 + OVERLAP_BARS  # three hours of gap plus the overlap
    tick = [tick_job(k, 2_000 + 7 * k, tick_bars) for k in range(tick_payloads)]
    backfill = [
        Job(
            make_payload(
                s,
                "stock" if s % 2 == 0 else "crypto",
                5_000,
                first_day=str(np.datetime64("1995-01-02") + np.timedelta64(w * 1_000, "D")),
                warmup=300,
                seed=1_000 + 100 * s + w,
            )
        )
        for s in range(symbols)
        for w in range(windows)
    ]
    print(f"(generated payloads in {time.perf_counter() - start:.1f} s)")
    run_shape("one payload of 5,000 hourly bars", single, repeats * 2)
    tick_time = run_shape(
        f"hourly tick, {tick_payloads} payloads x {tick_bars} bars on ~2,000 stored", tick, repeats
    )
    run_shape(f"backfill, {symbols} symbols x {windows} windows of 5,000 bars", backfill, 1)
    run_jobs(tick_payloads, tick_bars, repeats)
    if not args.quick:
        verdict = "met" if tick_time.cpu < 1.0 else "NOT met"
        print(f"\ngoal: the tick in < 1 s of CPU: {tick_time.cpu:.3f} s, {verdict}")


if __name__ == "__main__":
    main()
