"""Every page of the dashboard, driven by AppTest against the real database and Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
from streamlit.testing.v1 import AppTest

from marketpipe.settings import Settings
from services.dashboard.live import BADGE_ICONS
from tests.integration.dashboard.conftest import (
    FAILED_JOB_ERROR,
    QUARANTINE_REASON,
    add_failed_job,
)

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


def figure_titles(app: AppTest) -> list[str]:
    titles = []
    for chart in app.get("plotly_chart"):
        layout = json.loads(chart.proto.spec)["layout"]
        titles.append(layout.get("title", {}).get("text", ""))
    return titles


@pytest.mark.parametrize("view", PAGES)
def test_empty_database_says_how_to_start(
    empty_settings: Settings, open_app: OpenApp, view: str
) -> None:
    app = open_app(empty_settings, view=view)
    assert any("DEMO DATA" in w for w in warnings(app))
    assert not app.get("plotly_chart")
    if view == "health":
        # every configured symbol is listed, none has data yet
        assert any("Stale data" in w and "no data" in w for w in warnings(app))
        freshness = app.dataframe[0].value
        assert sorted(freshness["symbol"]) == sorted(empty_settings.symbols)
    else:
        assert any("No data yet" in i and "services.fetcher --once" in i for i in infos(app))


def test_overview_cards_table_and_performers(loaded_settings: Settings, open_app: OpenApp) -> None:
    app = open_app(loaded_settings, view="overview", window="7d")
    symbols = set(loaded_settings.symbols)
    cards = {m.label.split(" · ")[0] for m in page_metrics(app)}
    assert cards == symbols
    table = app.dataframe[0].value
    assert set(table["symbol"]) == symbols
    assert table["day_pct_change"].notna().all()
    assert len(app.get("plotly_chart")) == 2
    assert downloads(app) == ["sparklines_7d", "overview", "best", "worst"]
    assert "Last updated" in app.caption[-1].value


def test_overview_asset_class_filter(loaded_settings: Settings, open_app: OpenApp) -> None:
    app = open_app(loaded_settings, view="overview")
    app.pills(key="asset_classes").set_value(["crypto"]).run()
    assert not app.exception
    table = app.dataframe[0].value
    assert set(table["asset_class"]) == {"crypto"}
    assert all("crypto" in m.label for m in page_metrics(app))


def test_instrument_view_with_overlays_and_open_bar(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(loaded_settings, view="instrument", symbol="BTC/USD", window="7d")
    assert page_metrics(app)[0].label.startswith("BTC/USD last close (1h")
    (chart,) = app.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    names = {trace.get("name") for trace in spec["data"]}
    assert {"BTC/USD", "SMA 20", "SMA 50", "RSI 14", "MACD", "volume"} <= names
    # The frozen sandbox clock is mid-hour: the newest BTC/USD bar is still open.
    assert "still open" in names
    app.pills(key="overlays").set_value(["Bollinger bands", "EMA 12"]).run()
    assert not app.exception
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    names = {trace.get("name") for trace in spec["data"]}
    assert {"Bollinger bands", "BB middle", "EMA 12"} <= names
    assert "SMA 20" not in names


def test_instrument_daily_interval(loaded_settings: Settings, open_app: OpenApp) -> None:
    app = open_app(loaded_settings, view="instrument", symbol="AAPL", interval="1day")
    assert not infos(app), infos(app)
    assert "(1day" in page_metrics(app)[0].label
    assert app.selectbox(key="interval").value == "1day"


def test_compare_rebased_summary_and_correlation(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(loaded_settings, view="compare", symbols="AAPL,BTC/USD,ETH/USD", window="7d")
    assert app.multiselect(key="symbols").value == ["AAPL", "BTC/USD", "ETH/USD"]
    titles = figure_titles(app)
    assert titles == [
        "Performance, rebased to 100 at the start of the window",
        "Distribution of returns on the common grid",
        "Correlation of returns on the common grid",
    ]
    summary = app.dataframe[0].value
    assert list(summary["symbol"]) == ["AAPL", "BTC/USD", "ETH/USD"]
    assert (summary["max_drawdown_pct"] <= 0).all()
    assert summary["volatility_pct"].gt(0).all()


def test_url_keeps_choices_and_ignores_bad_symbols(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    app = open_app(
        loaded_settings, view="compare", symbols="MSFT,'; DROP TABLE x;--,NOPE", window="90d"
    )
    assert app.multiselect(key="symbols").value == ["MSFT"]
    assert app.query_params["symbols"] == ["MSFT"] or app.query_params["symbols"] == "MSFT"
    app.sidebar.selectbox(key="window").select("1d").run()
    assert app.query_params["window"] in ("1d", ["1d"])
    assert app.query_params["view"] in ("compare", ["compare"])


def test_health_page_freshness_runs_queues_and_quarantine(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    job_id = add_failed_job(loaded_settings)
    app = open_app(loaded_settings, view="health")
    # the sandbox is frozen in March 2026: every symbol has missed fetches since
    assert any("Stale data" in w for w in warnings(app))
    frames = [frame.value for frame in app.dataframe]
    freshness, runs, depths, failed = frames[:4]
    assert set(freshness["status"]) == {"stale"}
    assert set(runs["status"]) <= {"ok", "partial"} and len(runs) > 0
    assert list(depths["queue"]) == ["marketpipe-transform", "marketpipe-load"]
    assert depths.set_index("queue").loc["marketpipe-transform", "failed"] == 1
    assert list(failed["job_id"]) == [job_id]
    assert failed["error"].iloc[0] == FAILED_JOB_ERROR
    reasons = frames[4]
    assert QUARANTINE_REASON in set(reasons["reason"])


def test_health_page_survives_unreachable_redis(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    unreachable = loaded_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = open_app(unreachable, view="health")
    assert any("did not answer" in e.value for e in app.error)


def test_health_page_lists_restatements_and_warns_of_open_ones(
    loaded_settings: Settings, open_app: OpenApp
) -> None:
    conn = psycopg2.connect(loaded_settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO marketpipe.restatements (symbol, interval, kind, ratio, bars_affected,"
            " status) VALUES ('AAPL', '1h', 'split', 4, 120, 'detected'),"
            " ('MSFT', '1h', 'correction', NULL, 1, 'restated')"
        )
    conn.close()
    try:
        app = open_app(loaded_settings, view="health")
        assert any(
            "1 series wait for a restatement" in w and "AAPL 1h (split)" in w for w in warnings(app)
        )
        [listed] = [f.value for f in app.dataframe if "kind" in f.value.columns]
        assert sorted(zip(listed["symbol"], listed["status"], strict=True)) == [
            ("AAPL", "detected"),
            ("MSFT", "restated"),
        ]
        assert "restatements" in downloads(app)
    finally:
        conn = psycopg2.connect(loaded_settings.database_url)
        with conn, conn.cursor() as cur:
            cur.execute("TRUNCATE marketpipe.restatements")
        conn.close()
