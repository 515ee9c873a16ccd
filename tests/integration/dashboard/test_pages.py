"""Every page of the dashboard, driven by AppTest against the real database and Redis.

The tests on an empty database come first: the module's loaded database (``loaded_settings``)
is filled at its first use and kept to the end of the module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import psycopg2
import pyarrow as pa
import pytest
from psycopg2 import sql
from redis import Redis
from streamlit.testing.v1 import AppTest

from marketpipe.db import reader_engine
from marketpipe.settings import Settings
from marketpipe.ticks import LAST_TICK_KEY, claim_key, tick_text
from services.dashboard import queries, theme
from services.dashboard.live import BADGE_ICONS
from services.sandbox.app import SandboxServer
from tests.integration.conftest import OUTPUTSIZE, run_pipeline
from tests.integration.dashboard.conftest import (
    FAILED_JOB_ERROR,
    QUARANTINE_REASON,
    add_failed_job,
)
from tests.support.sql import query

OpenApp = Callable[..., AppTest]
PAGES = ("overview", "instrument", "compare", "health")


def warnings(app: AppTest) -> list[str]:
    return [w.value for w in app.warning]


def infos(app: AppTest) -> list[str]:
    return [i.value for i in app.info]


def downloads(app: AppTest) -> list[str]:
    """The CSV names offered, in page order (each button's key is csv_<name>)."""
    return [b.proto.id.rsplit("csv_", 1)[-1] for b in app.get("download_button")]


def page_metrics(app: AppTest) -> list[Any]:
    """The page's metrics, without the live strip's (labelled with their badge)."""
    return [m for m in app.metric if not m.label.endswith(tuple(BADGE_ICONS.values()))]


def chart_titles(app: AppTest) -> list[str]:
    """The bold line the page writes above each chart (figures carry no title)."""
    return [m.value.strip("*") for m in app.markdown if m.value.startswith("**")]


def trace_names(app: AppTest, index: int = 0) -> set[str]:
    spec = json.loads(app.get("plotly_chart")[index].proto.spec)
    return {trace.get("name") for trace in spec["data"]}


def param(app: AppTest, name: str) -> str:
    value = app.query_params[name]
    return value[0] if isinstance(value, list) else value


@contextmanager
def rows_for_the_test(settings: Settings, table: str, insert: str) -> Iterator[None]:
    """``insert`` into the module's loaded database; ``table`` emptied again afterwards."""
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(insert)
    conn.close()
    try:
        yield
    finally:
        conn = psycopg2.connect(settings.database_url)
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier("marketpipe", table)))
        conn.close()


def statuses(app: AppTest) -> set[str]:
    return set(app.dataframe[0].value["status"])


# -- before the first bar --


@pytest.mark.parametrize("view", PAGES)
def test_empty_database_before_any_fetch_says_how_to_start(
    empty_settings: Settings, open_app: OpenApp, view: str
) -> None:
    app = open_app(empty_settings, view=view)
    assert any("DEMO DATA" in w for w in warnings(app))
    assert not app.get("plotly_chart")
    if view == "health":
        # every configured symbol is listed; none is late before the first fetch is done
        assert not any("Stale data" in w for w in warnings(app))
        assert any("wait for the fetcher's first fetch" in i for i in infos(app))
        freshness = app.dataframe[0].value
        assert sorted(freshness["symbol"]) == sorted(empty_settings.symbols)
        assert statuses(app) == {"awaiting first fetch"}
    else:
        assert any("no fetcher has started" in i and "make run" in i for i in infos(app))


def test_first_fetch_in_progress_is_said_and_not_an_alarm(
    empty_settings: Settings, open_app: OpenApp
) -> None:
    redis = Redis.from_url(empty_settings.redis_url)
    tick = datetime.now(UTC).replace(minute=5, second=0, microsecond=0)
    redis.set(claim_key(tick), "token", ex=600)  # what a fetcher holds while it runs a tick
    try:
        overview = open_app(empty_settings, view="overview")
        assert any(
            f"First fetch in progress (tick {tick:%H:%M} UTC)" in i for i in infos(overview)
        ), infos(overview)
        assert not any("no fetcher has started" in i for i in infos(overview))
        health = open_app(empty_settings, view="health")
        assert not any("Stale data" in w for w in warnings(health))
        assert statuses(health) == {"first fetch in progress"}
        # once the tick is done and a symbol still has no data, that symbol is an alarm
        redis.set(LAST_TICK_KEY, tick_text(tick))
        done = open_app(empty_settings, view="health")
        assert any("Stale data" in w and "no data" in w for w in warnings(done))
    finally:
        redis.delete(claim_key(tick), LAST_TICK_KEY)
        redis.close()


def test_data_stored_after_an_empty_page_view_shows_at_once(
    empty_settings: Settings, sandbox: SandboxServer, open_app: OpenApp
) -> None:
    """An empty result is not cached: the next run (a reload or the timer) sees new rows."""
    settings = empty_settings.model_copy(
        update={"twelve_data_base_url": sandbox.url, "fetch_outputsize": OUTPUTSIZE}
    )
    app = open_app(settings, view="overview", window="5d")
    assert not page_metrics(app)
    run_pipeline(settings)
    app.run()
    assert not app.exception
    assert {m.label.split(" · ")[0] for m in page_metrics(app)} == set(settings.symbols)


# -- the loaded database --


def test_overview_cards_table_and_performers(loaded_settings: Settings, open_app: OpenApp) -> None:
    app = open_app(loaded_settings, view="overview", window="5d")
    symbols = set(loaded_settings.symbols)
    cards = {m.label.split(" · ")[0] for m in page_metrics(app)}
    assert cards == symbols
    # every card names its currency; no card value is cut
    assert all(m.label.endswith(" · USD") for m in page_metrics(app))
    table = app.dataframe[0].value
    assert set(table["symbol"]) == symbols
    assert table["day_pct_change"].notna().all()
    assert len(app.get("plotly_chart")) == 2
    assert chart_titles(app) == ["Highest returns over 5D", "Lowest returns over 5D"]
    best, worst = _bars(app, 0), _bars(app, 1)
    assert best and worst and not set(best) & set(worst)  # no symbol in both lists
    assert downloads(app) == ["sparklines_7d", "overview", "best", "worst"]
    assert "Last updated" in app.caption[-1].value
    # one open/closed badge per venue: the stocks' exchange and crypto's 24/7
    (badges,) = [m.value for m in app.markdown if "badge[" in m.value]
    assert ":green-badge[Crypto · open 24/7]" in badges
    assert "open until" in badges or "closed, opens" in badges, badges


def _bars(app: AppTest, index: int) -> list[str]:
    spec = json.loads(app.get("plotly_chart")[index].proto.spec)
    return list(spec["data"][0]["y"])


def test_a_window_longer_than_the_history_says_how_much_there_is(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(loaded_settings, view="overview", window="1m")
    (notice,) = [i for i in infos(app) if "Backfill" in i]
    # the frozen sandbox served 120 hourly bars: five days of crypto
    assert "BTC/USD (5.0 days, since 2026-03-06)" in notice, notice
    assert "python -m services.fetcher backfill --since" in notice
    # a 1-day window lies inside every stored history: no notice
    assert not any("Backfill" in i for i in infos(open_app(loaded_settings, window="1d")))


def test_overview_asset_class_filter(loaded_settings: Settings, open_app: OpenApp) -> None:
    app = open_app(loaded_settings, view="overview")
    app.pills(key="asset_classes").set_value(["crypto"]).run()
    assert not app.exception
    table = app.dataframe[0].value
    assert set(table["asset_class"]) == {"crypto"}
    assert all("crypto" in m.label for m in page_metrics(app))


@contextmanager
def copies_of(settings: Settings, symbol: str, names: list[str]) -> Iterator[None]:
    """``symbol``'s bars stored again under each of ``names`` (more instruments than the
    loaded eight), removed again afterwards."""
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE copied AS SELECT * FROM marketpipe.bars WHERE symbol = %s", (symbol,)
        )
        for name in names:
            cur.execute("UPDATE copied SET symbol = %s", (name,))
            cur.execute("INSERT INTO marketpipe.bars SELECT * FROM copied")
    conn.close()
    try:
        yield
    finally:
        conn = psycopg2.connect(settings.database_url)
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM marketpipe.bars WHERE symbol = ANY(%s)", (names,))
        conn.close()


def test_more_instruments_than_the_cards_cap_show_the_table_alone(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    """Cards are for a glance at up to 12 instruments (50 cards took 2.5 s to draw); beyond,
    the table holds them all, and choosing fewer brings the cards back."""
    extra = [f"AAPL{n}" for n in range(1, 6)]  # 8 loaded + 5 = 13
    with copies_of(loaded_settings, "AAPL", extra):
        app = open_app(loaded_settings, view="overview", window="5d")
        assert not page_metrics(app)
        assert any("13 instruments" in c.value and "at most 12" in c.value for c in app.caption)
        assert len(app.dataframe[0].value) == 13
        app.pills(key="asset_classes").set_value(["crypto"]).run()
        assert not app.exception
        assert {m.label.split(" · ")[0] for m in page_metrics(app)} == {
            "BTC/USD",
            "ETH/USD",
            "SOL/USD",
        }


def test_performers_are_a_ranking_titled_highest_and_lowest(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    """Stocks alone (five): the upper half of the ranking can hold losses, so it is "highest
    returns", not "best" (a "Best" list with a loss was seen), split so none is listed twice."""
    app = open_app(loaded_settings, view="overview", window="5d")
    app.pills(key="asset_classes").set_value(["stock"]).run()
    assert not app.exception
    assert chart_titles(app) == ["Highest returns over 5D", "Lowest returns over 5D"]
    highest, lowest = _bars(app, 0), _bars(app, 1)
    assert len(highest) == 3 and len(lowest) == 2 and not set(highest) & set(lowest)
    assert any("split in halves" in c.value for c in app.caption)


def test_instrument_view_with_overlays_and_open_bar(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(loaded_settings, view="instrument", symbol="BTC/USD", window="5d")
    assert page_metrics(app)[0].label.startswith("BTC/USD last close, USD (1h")
    names = trace_names(app)
    assert {"BTC/USD", "SMA 20", "SMA 50", "RSI 14", "MACD"} <= names
    assert "volume" not in names  # crypto quotes carry no volume: no empty panel
    # The frozen sandbox clock is mid-hour: the newest BTC/USD bar is still open.
    assert "still open" in names
    app.pills(key="overlays").set_value(["Bollinger bands", "EMA 12"]).run()
    assert not app.exception
    names = trace_names(app)
    assert {"Bollinger bands", "BB middle", "EMA 12"} <= names
    assert "SMA 20" not in names
    # the overlays are part of the shareable URL
    assert param(app, "overlays") == "EMA 12,Bollinger bands"


def test_instrument_key_figures_log_scale_and_volume_of_a_stock(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(loaded_settings, view="instrument", symbol="AAPL", window="5d", log="1")
    captions = [c.value for c in app.caption]
    for name in ("Day range", "52-week range", "ATR 14", "Volatility 20 (ann.)", "Session VWAP"):
        assert name in captions, captions
    assert "Prev. close" in captions  # a stock: vs the previous session's close
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["yaxis"]["type"] == "log"
    assert "volume" in trace_names(app)
    assert app.toggle(key="log_scale").value is True


def test_an_unknown_symbol_in_a_link_is_reported(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(loaded_settings, view="instrument", symbol="NOPE1")
    (warning,) = [w for w in warnings(app) if "NOPE1" in w]
    first = sorted(loaded_settings.symbols)[0]
    assert "does not hold" in warning and f"Showing {first} instead" in warning


def test_instrument_daily_interval(loaded_settings: Settings, open_app: OpenApp) -> None:
    app = open_app(loaded_settings, view="instrument", symbol="AAPL", interval="1day")
    assert not [i for i in infos(app) if "Backfill" not in i], infos(app)
    assert "(1day" in page_metrics(app)[0].label
    assert app.segmented_control(key="interval").value == "1day"


def test_compare_rebased_summary_and_correlation(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(loaded_settings, view="compare", symbols="AAPL,BTC/USD,ETH/USD", window="5d")
    assert app.multiselect(key="symbols").value == ["AAPL", "BTC/USD", "ETH/USD"]
    assert chart_titles(app) == [
        "Performance, rebased to 100 at the start of the window",
        "Distribution of returns on the common grid",
        "Correlation of returns on the common grid",
    ]
    summary = app.dataframe[0].value
    assert list(summary["symbol"]) == ["AAPL", "BTC/USD", "ETH/USD"]
    assert (summary["max_drawdown_pct"] <= 0).all()
    assert summary["volatility_pct"].gt(0).all()


def test_compare_leaves_a_short_history_out_of_the_rebased_chart_and_says_so(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    """A month with five days of crypto: crypto rebased mid-window under "rebased at the start
    of the window" was seen; now it is left out of that chart and the notice says why."""
    app = open_app(loaded_settings, view="compare", symbols="AAPL,BTC/USD", window="1m")
    (notice,) = [i for i in infos(app) if "Backfill" in i]
    assert "BTC/USD" in notice and "left out of rebased and relative charts" in notice
    assert chart_titles(app)[0] == "Performance, rebased to 100 at the start of the window"
    drawn = trace_names(app, 0)
    assert "BTC/USD" not in drawn
    assert ("AAPL" in drawn) == ("AAPL (" not in notice)  # drawn unless its history is short


@pytest.mark.parametrize(("relative", "drawn"), [("peers", 3), ("BTC/USD", 2)])
def test_compare_relative_to_a_benchmark_or_the_peers(
    loaded_settings: Settings, open_app: OpenApp, relative: str, drawn: int
) -> None:
    app = open_app(
        loaded_settings,
        view="compare",
        symbols="AAPL,BTC/USD,ETH/USD",
        window="1d",  # inside every stored history: each symbol has its reference close
        relative=relative,
    )
    benchmark = "the peer average" if relative == "peers" else relative
    assert chart_titles(app)[0] == f"Performance relative to {benchmark}"
    names = trace_names(app)
    assert len(names & {"AAPL", "BTC/USD", "ETH/USD"}) == drawn
    assert param(app, "relative") == relative


def test_url_keeps_choices_and_reports_bad_symbols(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(
        loaded_settings, view="compare", symbols="MSFT,'; DROP TABLE x;--,NOPE", window="90d"
    )
    assert app.multiselect(key="symbols").value == ["MSFT"]
    assert param(app, "symbols") == "MSFT"
    assert param(app, "window") == "3m"  # an old link's window, as its horizon button
    assert any("NOPE" in w and "does not hold" in w for w in warnings(app))
    app.segmented_control(key="window").set_value("1d").run()
    assert param(app, "window") == "1d"
    assert param(app, "view") == "compare"


def test_health_page_freshness_runs_queues_and_quarantine(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    job_id = add_failed_job(loaded_settings)
    app = open_app(loaded_settings, view="health")
    # the sandbox is frozen in March 2026: every symbol has missed fetches since
    assert any("Stale data" in w for w in warnings(app))
    frames = [frame.value for frame in app.dataframe]
    freshness, fetches, runs, depths, failed = frames[:5]
    assert set(freshness["status"]) == {"stale"}
    # "Age, min" is whole minutes (3 decimals were seen) with thousands separators (384355)
    assert str(freshness["fetch_age_minutes"].dtype) == "Int64"
    ages = shown_texts(app.dataframe[0])["fetch_age_minutes"]
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*", age) for age in ages), list(ages)
    assert any("," in age for age in ages)  # the frozen sandbox's fetches are months old
    # The fetch cycle's own row: what it asked, what was new, what it cost.
    cycle = fetches[fetches["component"] == "fetcher"].iloc[0]
    assert cycle["symbols_asked"] == len(loaded_settings.symbols) == cycle["symbols_new"]
    assert cycle["credits"] >= len(loaded_settings.symbols)
    assert set(runs["status"]) <= {"ok", "partial"} and len(runs) > 0
    assert list(depths["queue"]) == ["marketpipe-transform", "marketpipe-load"]
    assert depths.set_index("queue").loc["marketpipe-transform", "failed"] == 1
    assert list(failed["job_id"]) == [job_id]
    assert failed["error"].iloc[0] == FAILED_JOB_ERROR
    reasons = frames[5]
    assert QUARANTINE_REASON in set(reasons["reason"])


def shown_texts(table: Any) -> pd.DataFrame:
    """A styled table's cells as the page shows them (the Styler's formatted strings)."""
    return pa.ipc.open_stream(table.proto.arrow_data.styler.display_values).read_pandas()


def header_labels(table: Any) -> list[str]:
    """What a shown table's header says per visible column (its label, else the name)."""
    config = json.loads(table.proto.columns or "{}")
    shown = list(table.proto.column_order) or [str(c) for c in table.value.columns]
    return [config.get(name, {}).get("label") or name for name in shown]


@pytest.mark.parametrize("view", PAGES)
def test_table_headers_are_words_not_column_names(
    loaded_settings: Settings, open_app: OpenApp, view: str
) -> None:
    app = open_app(loaded_settings, view=view, window="1d")
    labels = [label for table in app.dataframe for label in header_labels(table)]
    assert labels or view == "instrument"
    assert not [label for label in labels if "_" in label], labels


@pytest.mark.parametrize("view", PAGES)
def test_missing_values_show_one_mark(
    loaded_settings: Settings, open_app: OpenApp, view: str
) -> None:
    """A missing value is an em dash everywhere: tables (not Streamlit's grey "None"), cards
    and texts (not "n/a" here and "None" there)."""
    app = open_app(loaded_settings, view=view, window="1m")
    assert [t.proto.placeholder for t in app.dataframe] == [theme.MISSING] * len(app.dataframe)
    texts = [e.value for kind in ("markdown", "caption", "info") for e in app.get(kind)]
    texts += [f"{m.label} {m.value} {m.delta or ''}" for m in app.metric]
    assert not [t for t in texts if "n/a" in str(t) or "None" in str(t)], texts


def test_health_page_survives_unreachable_redis(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    unreachable = loaded_settings.model_copy(
        update={"redis_url": "redis://:hunter2-secret@127.0.0.1:1/0"}
    )
    app = open_app(unreachable, view="health")
    errors = [e.value for e in app.error]
    assert any("127.0.0.1:1/0 (REDIS_URL) did not answer" in e for e in errors), errors
    assert not any("hunter2" in e for e in errors)  # the password in the URL is never shown


@pytest.mark.parametrize("view", PAGES)
def test_an_unreachable_database_is_a_short_notice_not_a_traceback(
    empty_settings: Settings, open_app: OpenApp, view: str
) -> None:
    gone = empty_settings.model_copy(
        update={"database_url": "postgresql://postgres:pw-secret@127.0.0.1:1/pagila"}
    )
    app = open_app(gone, view=view)  # open_app fails on any exception box
    errors = [e.value for e in app.error]
    assert len(errors) == 1, errors
    assert errors[0].startswith("Database unreachable: PostgreSQL at 127.0.0.1:1/pagila")
    assert "(DATABASE_URL)" in errors[0] and "pw-secret" not in errors[0]


def test_health_page_lists_restatements_and_warns_of_open_ones(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    with rows_for_the_test(
        loaded_settings,
        "restatements",
        "INSERT INTO marketpipe.restatements (symbol, interval, kind, ratio, bars_affected,"
        " status) VALUES ('AAPL', '1h', 'split', 4, 120, 'detected'),"
        " ('MSFT', '1h', 'correction', NULL, 1, 'restated')",
    ):
        conn = psycopg2.connect(loaded_settings.database_url)
        with conn, conn.cursor() as cur:
            # The run log's rows of the two: one re-fetching, one swapped in.
            cur.execute(
                "INSERT INTO marketpipe.pipeline_runs (run_id, component, status, symbol,"
                " interval, windows, credits, rows_loaded, rows_removed, message, started_at)"
                " VALUES ('restatement:901', 'restatement', 'running', 'AAPL', '1h', 3, 3, 0,"
                " NULL, 'split #901: re-fetching', now()),"
                " ('restatement:902', 'restatement', 'ok', 'MSFT', '1h', 1, 1, 1, 0,"
                " '1 bars re-fetched, 1 written, 0 no longer served', now())"
            )
        conn.close()
        try:
            app = open_app(loaded_settings, view="health")
            assert any(
                "1 series wait for a restatement" in w and "AAPL 1h (split)" in w
                for w in warnings(app)
            )
            [listed] = [f.value for f in app.dataframe if "kind" in f.value.columns]
            assert sorted(zip(listed["symbol"], listed["status"], strict=True)) == [
                ("AAPL", "detected"),
                ("MSFT", "restated"),
            ]
            assert "restatements" in downloads(app)
            [runs] = [f.value for f in app.dataframe if "rows_replaced" in f.value.columns]
            assert sorted(zip(runs["symbol"], runs["status"], runs["windows"], strict=True)) == [
                ("AAPL", "running", 3),
                ("MSFT", "ok", 1),
            ]
        finally:
            conn = psycopg2.connect(loaded_settings.database_url)
            with conn, conn.cursor() as cur:
                cur.execute("DELETE FROM marketpipe.pipeline_runs WHERE component = 'restatement'")
            conn.close()


def test_health_page_shows_new_series_backfilling_and_removed_ones_inactive(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    with rows_for_the_test(
        loaded_settings,
        "configured_series",
        "INSERT INTO marketpipe.configured_series (symbol, interval, status, backfill_since,"
        " backfill_status, windows_done, windows_total) VALUES"
        " ('MSFT', '1day', 'active', '2024-03-11', 'running', 2, 5),"
        " ('DOGE/USD', '1h', 'inactive', '2024-03-11', 'done', 4, 4)",
    ):
        app = open_app(loaded_settings, view="health")
        assert any(
            "1 new series backfilling" in i and "MSFT 1day (2/5 windows)" in i for i in infos(app)
        ), infos(app)
        assert any("Inactive" in c.value and "DOGE/USD 1h" in c.value for c in app.caption)
        [listed] = [f.value for f in app.dataframe if "windows_total" in f.value.columns]
        assert sorted(zip(listed["symbol"], listed["status"], strict=True)) == [
            ("DOGE/USD", "inactive"),
            ("MSFT", "active"),
        ]
        assert "configured_series" in downloads(app)


def test_instrument_daily_bars_come_from_the_api_when_stored(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    # The same sandbox's 1h and 1day series, one cycle: both stored whatever an earlier test
    # did to the module's database (empty_settings empties the same database).
    run_pipeline(loaded_settings.model_copy(update={"intervals": ("1h", "1day")}))
    try:
        app = open_app(loaded_settings, view="instrument", symbol="AAPL", interval="1day")
        control = app.segmented_control(key="interval")
        assert control.value == "1day" and list(control.options) == ["1h", "1day"]
        assert any("daily bars from the API" in c.value for c in app.caption)
        assert app.get("plotly_chart")
        # What the page drew: the API's bars by their trading day, not the aggregate's.
        engine = reader_engine(loaded_settings)
        try:
            since, until = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 3, 12, tzinfo=UTC)
            drawn = queries.daily_bars(engine, "AAPL", since, until, from_api=True)
            aggregated = queries.daily_bars(engine, "AAPL", since, until)
        finally:
            engine.dispose()
        api_days = query(
            loaded_settings.database_url,
            "SELECT bar_time_local::date, close FROM marketpipe.bars"
            " WHERE symbol = 'AAPL' AND interval = '1day' ORDER BY bar_time",
        )
        assert len(drawn) == len(api_days) > len(aggregated)  # 1day reaches further back
        assert [(t.date(), c) for t, c in zip(drawn["bar_time"], drawn["close"], strict=True)] == [
            (d, c) for d, c in api_days
        ]
    finally:
        conn = psycopg2.connect(loaded_settings.database_url)
        with conn, conn.cursor() as cur:
            cur.execute("DELETE FROM marketpipe.bars WHERE interval = '1day'")
            cur.execute("DELETE FROM marketpipe.watermarks WHERE interval = '1day'")
        conn.close()
