"""Several intervals and one-step symbols on real processes: the fetcher's schedule loop with
INTERVALS=1h,1day, transformer and loader workers, the sandbox over HTTP, Postgres and Redis.

A configured series is backfilled to BACKFILL_SINCE without a command; a symbol added later is
backfilled the same way by the running pipeline; a symbol removed is fetched no more, marked
inactive, and its history stays.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from redis import Redis

from marketpipe.market import sessions
from marketpipe.settings import Settings
from marketpipe.ticks import LAST_TICK_KEY, TICK_CLAIM_PREFIX
from services.sandbox.app import SandboxServer
from tests.integration.conftest import run_service, settings_env
from tests.support.processes import service_process, stop_with_sigterm, wait_while_running
from tests.support.sql import query

SINCE = date(2026, 1, 5)  # a Monday, some ten weeks before the sandbox's Wednesday
INTERVALS = ("1h", "1day")


def first_bars(url: str) -> dict[tuple[str, str], datetime]:
    return {
        (s, i): first
        for s, i, first in query(
            url, "SELECT symbol, interval, min(bar_time) FROM marketpipe.bars GROUP BY 1, 2"
        )
    }


def configured(url: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    rows = query(
        url,
        "SELECT symbol, interval, status, backfill_since, backfill_status, windows_done,"
        " windows_total FROM marketpipe.configured_series",
    )
    return {(r[0], r[1]): r[2:] for r in rows}


def backfilled(url: str, symbols: tuple[str, ...]) -> Callable[[], bool]:
    """Every series of ``symbols`` backfilled and loaded back to its first session after SINCE."""

    def ready() -> bool:
        rows, firsts = configured(url), first_bars(url)
        return all(
            rows.get((s, i), ())[2:3] == ("done",)
            and (s, i) in firsts
            and firsts[(s, i)].date() <= SINCE + timedelta(days=1)
            for s in symbols
            for i in INTERVALS
        )

    return ready


def test_configured_series_are_backfilled_and_removed_ones_kept_inactive(
    clean_db: Settings, redis: Redis, sandbox: SandboxServer, tmp_path: Path
) -> None:
    settings = clean_db.model_copy(
        update={
            "twelve_data_base_url": sandbox.url,
            "symbols": ("AAPL", "BTC/USD"),
            "intervals": INTERVALS,
            "fetch_outputsize": 120,
            "backfill_since": SINCE.isoformat(),
            "restatement_poll_seconds": 0.5,
        }
    )
    url = settings.database_url
    with ExitStack() as stack:
        for module in ("services.transformer", "services.loader"):
            stack.enter_context(
                service_process(module, settings_env(settings), tmp_path / f"{module}.log")
            )
        fetcher_log = tmp_path / "fetcher.log"
        fetcher = stack.enter_context(
            service_process("services.fetcher", settings_env(settings), fetcher_log)
        )
        wait_while_running(
            fetcher, fetcher_log, backfilled(url, settings.symbols), "the first backfills"
        )
        rows = configured(url)
        assert set(rows) == {(s, i) for s in settings.symbols for i in INTERVALS}
        for status, since, backfill, done, total in rows.values():
            assert (status, since, backfill) == ("active", SINCE, "done") and done == total > 0
        # Both intervals were fetched by the tick and stored apart, each its own watermark.
        watermarks = query(url, "SELECT symbol, interval FROM marketpipe.watermarks")
        assert sorted(watermarks) == sorted(rows)
        daily = query(
            url,
            "SELECT bar_time_local::date FROM marketpipe.bars"
            " WHERE symbol = 'AAPL' AND interval = '1day' ORDER BY bar_time",
        )
        # Every NYSE session, holidays absent, from before SINCE (the warm-up's bars are stored
        # too) to Wednesday's still open bar, without a gap between the tick and the backfill.
        days = [d for (d,) in daily]
        nyse = sessions("XNYS")["day"]
        assert days[0] < SINCE and days == [d for d in nyse if days[0] <= d <= date(2026, 3, 11)]
        assert len([d for d in days if d >= SINCE]) == 46
        stop_with_sigterm(fetcher, fetcher_log)
        # The next tick (here: the same tick again) comes with the new SYMBOLS.
        redis.delete(LAST_TICK_KEY, *redis.keys(f"{TICK_CLAIM_PREFIX}:*"))

        # MSFT is added, BTC/USD removed: the same fetcher, restarted with the new SYMBOLS.
        btc_bars = query(url, "SELECT count(*) FROM marketpipe.bars WHERE symbol = 'BTC/USD'")
        moved = settings.model_copy(update={"symbols": ("AAPL", "MSFT")})
        restarted_at = datetime.now(UTC)
        second_log = tmp_path / "fetcher-2.log"
        fetcher = stack.enter_context(
            service_process("services.fetcher", settings_env(moved), second_log)
        )
        wait_while_running(fetcher, second_log, backfilled(url, ("MSFT",)), "MSFT's backfill")
        assert "tick " in second_log.read_text()  # the tick ran: AAPL and MSFT were fetched

        # The API's daily series is restated on demand like any other (its windows are 1day's).
        aapl_daily = "SELECT bar_time, close FROM marketpipe.bars WHERE symbol = 'AAPL'"
        aapl_daily += " AND interval = '1day' ORDER BY bar_time"
        before = query(url, aapl_daily)
        said = run_service(
            "services.ops",
            *("restate", "--symbol", "AAPL", "--interval", "1day", "--wait", "60"),
            env=settings_env(moved),
        )
        assert "restated" in said and "AAPL 1day" in said
        assert query(url, aapl_daily) == before  # the sandbox answers as before: same series
        assert query(
            url,
            "SELECT interval, status FROM marketpipe.restatements WHERE symbol = 'AAPL'",
        ) == [("1day", "restated")]
        stop_with_sigterm(fetcher, second_log)

    rows = configured(url)
    assert {k: v[0] for k, v in rows.items()} == {
        ("AAPL", "1h"): "active",
        ("AAPL", "1day"): "active",
        ("MSFT", "1h"): "active",
        ("MSFT", "1day"): "active",
        ("BTC/USD", "1h"): "inactive",
        ("BTC/USD", "1day"): "inactive",
    }
    # AAPL was backfilled once; the restart found nothing more to do for it.
    assert rows[("AAPL", "1h")][2:] == ("done", *rows[("AAPL", "1h")][3:])
    # BTC/USD's history is kept, and no request asked for it after the restart.
    assert query(url, "SELECT count(*) FROM marketpipe.bars WHERE symbol = 'BTC/USD'") == btc_bars
    assert query(
        url,
        "SELECT count(*) FROM marketpipe.raw_payloads WHERE symbol = 'BTC/USD' AND loaded_at >= %s",
        restarted_at,
    ) == [(0,)]
    assert "BTC/USD 1h is no longer configured" in second_log.read_text()
