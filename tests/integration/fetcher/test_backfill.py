"""The resumable backfill: windows within the budget, and every bar since the date stored."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from redis import Redis

from marketpipe.settings import Settings
from services.fetcher.backfill import ProgressBar, run_backfill
from services.fetcher.context import FetchContext
from services.fetcher.series import backfill_windows
from services.sandbox.app import SandboxServer
from services.sandbox.market import model_bars
from tests.integration.conftest import FROZEN_AT, run_service, settings_env
from tests.integration.fetcher.conftest import (
    query,
    queued_payloads,
)
from tests.support.processes import service_process, stop_with_sigterm


class StopAfter(ProgressBar):
    """A progress bar that stops the backfill like Ctrl-C after some updates."""

    updates = 0
    stop_after: int | None = None

    def update(self, done: int, note: str = "", **shown: Any) -> None:
        super().update(done, note, **shown)
        StopAfter.updates += 1
        if self.stop_after is not None and StopAfter.updates > self.stop_after:
            raise KeyboardInterrupt


def test_backfill_pages_windows_within_budget_and_resumes_after_an_interruption(
    make_context: Callable[..., FetchContext], free_sandbox: SandboxServer, redis: Redis
) -> None:
    symbols = ["BTC/USD", "ETH/USD", "AAPL"]
    ctx = make_context(symbols=symbols, interval="15min")
    since, until = date(2025, 11, 1), date(2026, 3, 12)
    crypto_windows = backfill_windows(since, until, "15min", "crypto")
    stock_windows = backfill_windows(since, until, "15min", "stock")
    assert len(crypto_windows) >= 3 and len(stock_windows) >= 1
    total = 2 * len(crypto_windows) + len(stock_windows)

    stream = io.StringIO()
    StopAfter.stop_after = 2
    with pytest.raises(KeyboardInterrupt):
        run_backfill(ctx, since, until=until, progress=lambda n: StopAfter(n, stream=stream))
    first = len(queued_payloads(redis, ctx.settings))
    assert 0 < first < total

    StopAfter.stop_after = None
    report = run_backfill(ctx, since, progress=lambda n: StopAfter(n, stream=stream))
    payloads = queued_payloads(redis, ctx.settings)
    assert len(payloads) == total  # the resumed run did only what was left
    assert report.windows_done == report.windows_total == total
    assert "resuming" in stream.getvalue() and "ETA" in stream.getvalue()
    assert ctx.client.refusals == 0  # type: ignore[attr-defined]

    # Every 15-minute bar of BTC/USD since `since` is in some payload: no window was skipped.
    seen = {v["datetime"] for p in payloads if p.symbol == "BTC/USD" for v in p.body["values"]}
    expected = (datetime(2026, 3, 11, 18, 45) - datetime(2025, 11, 1)) // timedelta(minutes=15)
    assert sum(1 for d in seen if d >= "2025-11-01") >= expected
    assert all(p.request["outputsize"] == 5000 for p in payloads)
    assert all(len(p.body["values"]) <= 5000 for p in payloads)


SINCE = date(2025, 6, 1)


def stored_bar_times(settings: Settings, symbol: str) -> list[datetime]:
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT bar_time FROM marketpipe.bars WHERE symbol = %s AND interval = '1h'"
            " ORDER BY bar_time",
            (symbol,),
        )
        times = [bar_time for (bar_time,) in cur.fetchall()]
    conn.close()
    return times


def model_bar_times(symbol: str) -> list[datetime]:
    start = datetime(SINCE.year, SINCE.month, SINCE.day, tzinfo=UTC)
    bars = model_bars(symbol, "1h", FROZEN_AT, start=start, outputsize=1_000_000)
    return [datetime.fromtimestamp(int(t), UTC) for t in bars.open_time]


@pytest.mark.parametrize(
    "until",
    [
        None,  # today on the fetcher's clock, months after the frozen API's now
        FROZEN_AT.date() + timedelta(days=400),  # newest windows beyond the API's last bar
    ],
)
def test_a_backfill_stores_every_bar_since_the_date(
    pipeline_settings: Settings, redis: Redis, sandbox: SandboxServer, until: date | None
) -> None:
    symbols = ("AAPL", "BTC/USD")
    settings = pipeline_settings.model_copy(update={"symbols": symbols})
    env = settings_env(settings)
    command = ["backfill", "--since", SINCE.isoformat()]
    run_service(
        "services.fetcher", *command, *(["--until", until.isoformat()] if until else []), env=env
    )
    run_service("services.transformer", "--burst", env=env)
    run_service("services.loader", "--burst", env=env)
    for symbol in symbols:
        expected = model_bar_times(symbol)
        assert len(expected) > 1000  # more than one window's worth for the coin
        assert stored_bar_times(settings, symbol) == expected, symbol


def test_backfill_wait_returns_once_every_window_is_loaded_and_says_how_many_rows(
    pipeline_settings: Settings, redis: Redis, sandbox: SandboxServer, tmp_path: Path
) -> None:
    settings = pipeline_settings.model_copy(update={"symbols": ("BTC/USD",)})
    env = settings_env(settings)
    logs = {name: tmp_path / f"{name}.log" for name in ("transformer", "loader")}
    with (
        service_process("services.transformer", env, logs["transformer"]) as transformer,
        service_process("services.loader", env, logs["loader"]) as loader,
    ):
        output = run_service(
            "services.fetcher", "backfill", "--since", SINCE.isoformat(), "--wait", env=env
        )
        # SIGTERM, not the kill on the way out: a killed worker's scheduler process lives on.
        stop_with_sigterm(transformer, logs["transformer"])
        stop_with_sigterm(loader, logs["loader"])
    # Returned only after the loads: the bars are queryable, and the line says how many.
    stored = stored_bar_times(settings, "BTC/USD")
    assert stored == model_bar_times("BTC/USD")
    windows = len(backfill_windows(SINCE, FROZEN_AT.date() + timedelta(days=1), "1h", "crypto"))
    match = re.search(r"backfill loaded: (\d+) windows, (\d+) bars", output)
    assert match, output
    assert int(match.group(1)) == windows
    assert int(match.group(2)) >= len(stored)  # windows overlap by their warm-up
    runs = query(
        settings,
        "SELECT status, symbols_asked, symbols_new, credits FROM marketpipe.pipeline_runs"
        " WHERE component = 'backfill'",
    )
    # A row per window: those with bars ok; any past the API's newest bar (the fetcher's clock
    # starts on this machine's date, months after the frozen API's) had no data.
    assert [r for r in runs if r[0] == "ok"] == [("ok", 1, 1, 1)] * windows, runs
    assert all(r == ("no_data", 1, 0, 1) for r in runs if r[0] != "ok"), runs
