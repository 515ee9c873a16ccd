"""marketpipe dashboard: market overview, instrument, comparison and pipeline health.

Layout only: SQL lives in queries.py, numbers in metrics.py, figures in charts.py. The app
reads through the read-only role; the page body is a fragment that refreshes itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from sqlalchemy.engine import Engine

from marketpipe.db import reader_engine
from marketpipe.market import INTRADAY_MINUTES
from marketpipe.settings import Settings, load_settings
from services.dashboard import charts, display, metrics, queries, queue_status, view_state
from services.dashboard import live as live_prices
from services.dashboard.view_state import CUSTOM, DAILY, VIEWS, WINDOWS, ViewState

F = TypeVar("F", bound=Callable[..., Any])

# A fetch's rows are loaded within minutes of its tick; only after that is a missing one late.
FRESHNESS_GRACE = timedelta(minutes=10)
QUARANTINE_LOOKBACK = timedelta(days=7)
SPARKLINE_BUCKET = timedelta(hours=3)
PERFORMERS = 5
CARD_COLUMNS = 4
NO_DATA = (
    "No data yet. Start the pipeline with `make run` (or `docker compose up`); the fetcher loads"
    " the configured symbols at its next scheduled tick. For one fetch right now run"
    " `python -m services.fetcher --once` next to running transformer and loader workers."
)


@st.cache_resource
def _settings() -> Settings:
    return load_settings()


@st.cache_resource
def _engine() -> Engine:
    return reader_engine(_settings())


def _cached(function: F, ttl: int) -> F:
    # Cached results never outlive one refresh interval, so every refresh shows fresh data.
    return st.cache_data(  # type: ignore[return-value]
        ttl=ttl,
        show_spinner=False,
        hash_funcs={Engine: lambda engine: engine.url.render_as_string()},
    )(function)


def _csv_button(frame: pd.DataFrame, name: str) -> None:
    st.download_button(
        "Download CSV",
        frame.to_csv(index=False).encode(),
        file_name=f"{name}.csv",
        mime="text/csv",
        key=f"csv_{name}",
        on_click="ignore",
        icon=":material/download:",
    )


def _chart(figure: go.Figure, data: pd.DataFrame, name: str) -> None:
    """A chart with a download of exactly the rows it draws."""
    st.plotly_chart(figure, key=f"chart_{name}")
    _csv_button(data, name)


def window_choice(start: object, end: object) -> str:
    # an unfinished custom range (one date picked so far) falls back to the default window
    window: str = st.session_state.window
    return view_state.DEFAULT_WINDOW if window == CUSTOM and not (start and end) else window


class Dashboard:
    """One page render: the settings, the cached queries and what the analyst chose."""

    def __init__(self, settings: Settings) -> None:
        ttl = settings.dashboard_refresh_seconds
        self.settings = settings
        self.catalog = _cached(queries.catalog, ttl)
        self.overview = _cached(queries.overview, ttl)
        self.sparklines = _cached(queries.sparklines, ttl)
        self.bars = _cached(queries.bars, ttl)
        self.daily_bars = _cached(queries.daily_bars, ttl)
        self.compare_closes = _cached(queries.compare_closes, ttl)
        self.quote = _cached(queries.quote, ttl)
        self.period_returns = _cached(queries.period_returns, ttl)
        self.rebased = _cached(queries.rebased, ttl)
        self.freshness = _cached(queries.freshness, ttl)
        self.recent_runs = _cached(queries.recent_runs, ttl)
        self.quarantine = _cached(queries.quarantine, ttl)
        self.quarantine_reasons = _cached(queries.quarantine_reasons, ttl)
        self.restatements = _cached(queries.restatements, ttl)

    # -- controls (outside the fragment: a change reruns the page and rewrites the URL) --

    def controls(self, catalog: pd.DataFrame) -> ViewState:
        known = catalog["symbol"].tolist()
        intervals = [self.settings.interval, DAILY]
        if "url_loaded" not in st.session_state:
            # First run of this session: the URL (a shared link) decides the initial choices.
            initial = view_state.parse(st.query_params.to_dict(), known, intervals)
            st.session_state.update(
                view=initial.view,
                window=initial.window,
                symbol=initial.symbol,
                symbols=list(initial.symbols),
                interval=initial.interval,
                utc=initial.utc,
                url_loaded=True,
            )
            if initial.start and initial.end:
                st.session_state.custom_range = (initial.start, initial.end)
        with st.sidebar:
            st.radio("View", list(VIEWS), format_func=VIEWS.__getitem__, key="view")
            st.selectbox(
                "Window",
                [*WINDOWS, CUSTOM],
                format_func=lambda key: WINDOWS[key][0] if key in WINDOWS else "Custom dates",
                key="window",
            )
            start = end = None
            if st.session_state.window == CUSTOM:
                newest = catalog["last_bar"].max() if len(catalog) else datetime.now(UTC)
                st.session_state.setdefault(
                    "custom_range", ((newest - timedelta(days=30)).date(), newest.date())
                )
                chosen = st.date_input("Dates (UTC)", key="custom_range")
                if isinstance(chosen, tuple) and len(chosen) == 2:
                    start, end = chosen
            if known and st.session_state.view == "instrument":
                if st.session_state.get("symbol") not in known:
                    st.session_state.symbol = known[0]
                st.selectbox("Symbol", known, key="symbol")
                chosen_window = ViewState(window=window_choice(start, end), start=start, end=end)
                options = view_state.intervals_for(chosen_window, self.settings.interval)
                if st.session_state.get("interval") not in options:
                    st.session_state.interval = options[0]
                st.selectbox(
                    "Interval",
                    options,
                    key="interval",
                    help="Hourly bars for windows up to a month; daily bars beyond.",
                )
            if known and st.session_state.view == "compare":
                st.session_state.symbols = [s for s in st.session_state.symbols if s in known]
                st.multiselect("Symbols", known, key="symbols")
            st.toggle(
                "Times in UTC",
                key="utc",
                help="Off: stock bars in their exchange's time (zone named), crypto in UTC.",
            )
        state = ViewState(
            view=st.session_state.view,
            window=window_choice(start, end),
            start=start,
            end=end,
            symbol=st.session_state.get("symbol"),
            symbols=tuple(st.session_state.get("symbols", ())),
            interval=st.session_state.get("interval", self.settings.interval),
            utc=bool(st.session_state.get("utc", False)),
        )
        st.query_params.from_dict(view_state.to_params(state))
        return state

    # -- pages --

    def market_overview(self, engine: Engine, state: ViewState, catalog: pd.DataFrame) -> None:
        newest = catalog["last_bar"].max().to_pydatetime()
        since, until = view_state.window_bounds(state, newest)
        window_label = (
            WINDOWS[state.window][0] if state.window in WINDOWS else f"since {since:%Y-%m-%d}"
        )
        table = self.overview(engine, self.settings.interval, since, until)
        classes = sorted(table["asset_class"].unique())
        chosen = st.pills(
            "Asset class", classes, selection_mode="multi", default=classes, key="asset_classes"
        )
        table = table[table["asset_class"].isin(chosen or classes)]
        zones = [
            display.display_zone(r.asset_class, r.exchange_timezone, utc=state.utc)
            for r in table.itertuples(index=False)
        ]
        table = table.assign(
            zone=zones,
            last_bar_local=[
                display.format_time(t, z) for t, z in zip(table["last_bar"], zones, strict=True)
            ],
        )
        spark_frame = self.sparklines(
            engine, self.settings.interval, newest - timedelta(days=7), newest, SPARKLINE_BUCKET
        )
        spark = metrics.sparkline_points(spark_frame[spark_frame["symbol"].isin(table["symbol"])])
        columns = st.columns(CARD_COLUMNS)
        for index, row in enumerate(table.to_dict("records")):
            with columns[index % CARD_COLUMNS]:
                st.metric(
                    f"{row['symbol']} · {row['asset_class']}",
                    display.price(row["last_price"], row["price_decimals"]),
                    display.signed_percent(row["day_pct_change"])
                    if pd.notna(row["day_pct_change"])
                    else None,
                    delta_description=f"vs {row['reference']}",
                    chart_data=spark.get(row["symbol"]),
                    border=True,
                    help=f"{row['instrument_name'] or row['symbol']}; last bar"
                    f" {row['last_bar_local']}" + ("" if row["is_complete"] else " (still open)"),
                )
                st.caption(
                    f"7 d {display.signed_percent(row['change_7d'])} ·"
                    f" {window_label} {display.signed_percent(row['change_window'])}"
                )
        _csv_button(display.with_local_times(spark_frame, "UTC"), "sparklines_7d")
        st.subheader("All instruments")
        shown = display.rounded(
            table.assign(trend=table["symbol"].map(spark)),
            prices=("last_price", "reference_close", "day_change", "high_52w", "low_52w"),
        )
        st.dataframe(
            shown,
            hide_index=True,
            column_order=(
                "symbol",
                "instrument_name",
                "asset_class",
                "last_price",
                "day_change",
                "day_pct_change",
                "reference",
                "change_7d",
                "change_window",
                "high_52w",
                "low_52w",
                "avg_volume_20d",
                "trend",
                "last_bar_local",
                "is_complete",
            ),
            column_config={
                "last_price": st.column_config.NumberColumn("last price"),
                "day_change": st.column_config.NumberColumn("day change"),
                "day_pct_change": st.column_config.NumberColumn("day %", format="%+.2f"),
                "reference": st.column_config.TextColumn("day change vs"),
                "change_7d": st.column_config.NumberColumn("7 d %", format="%+.2f"),
                "change_window": st.column_config.NumberColumn(f"{window_label} %", format="%+.2f"),
                "high_52w": st.column_config.NumberColumn("52 w high"),
                "low_52w": st.column_config.NumberColumn("52 w low"),
                "avg_volume_20d": st.column_config.NumberColumn("avg volume (20 d)", format="%.0f"),
                "trend": st.column_config.LineChartColumn("7 days"),
                "last_bar_local": st.column_config.TextColumn("last bar"),
                "is_complete": st.column_config.CheckboxColumn("bar closed"),
            },
        )
        st.caption(
            "Returns: marketpipe.period_returns (close at the end vs the last close at or before"
            f" the start, {since:%Y-%m-%d %H:%M} UTC). Day change: stocks vs the previous"
            " session's close, crypto and forex vs 24 hours before. Prices at quoted precision."
        )
        _csv_button(
            display.with_local_times(
                table.drop(columns=["zone", "last_bar_local"]), "UTC", "last_bar"
            )
            .drop(columns=["time_zone"])
            .assign(last_bar_local=table["last_bar_local"].to_numpy()),
            "overview",
        )
        best, worst = metrics.best_and_worst(table, PERFORMERS)
        left, right = st.columns(2)
        with left:
            _chart(charts.performers_figure(best, f"Best over {window_label}"), best, "best")
        with right:
            _chart(charts.performers_figure(worst, f"Worst over {window_label}"), worst, "worst")

    def instrument(self, engine: Engine, state: ViewState, catalog: pd.DataFrame) -> None:
        symbol = state.symbol
        if symbol is None:
            return
        newest = catalog.loc[catalog["symbol"] == symbol, "last_bar"].max().to_pydatetime()
        since, until = view_state.window_bounds(state, newest)
        quote = self.quote(engine, symbol, self.settings.interval, since, until)
        info = quote.iloc[0] if len(quote) else None
        daily = state.interval == DAILY
        if daily:
            history = self.daily_bars(engine, symbol, since, until)
        else:
            history = self.bars(engine, symbol, state.interval, since, until)
        overlays = st.pills(
            "Overlays",
            list(charts.OVERLAYS),
            selection_mode="multi",
            default=["SMA 20", "SMA 50"],
            key="overlays",
        )
        if history.empty or info is None:
            st.info(
                f"No {symbol} bars between {since:%Y-%m-%d} and {until:%Y-%m-%d}:"
                " pick a longer window."
            )
            return
        zone = display.display_zone(info["asset_class"], info["exchange_timezone"], utc=state.utc)
        last = history.iloc[-1]
        status = "still open" if not last["is_complete"] else "closed"
        st.metric(
            f"{symbol} last close ({state.interval}, bar {status})",
            display.price(info["close"], info["price_decimals"]),
            display.signed_percent(info["day_pct_change"])
            if pd.notna(info["day_pct_change"])
            else None,
            delta_description=f"vs {info['reference']}",
            help=f"last bar {display.format_time(info['bar_time'], zone)}",
        )
        st.caption(
            f"Return over the window: {display.signed_percent(info['window_return'])}"
            f" · 52 w range {display.price(info['low_52w'], info['price_decimals'])}"
            f" to {display.price(info['high_52w'], info['price_decimals'])}"
            f" · times in {zone if not daily else 'trading days'}"
        )
        live_bar = pd.DataFrame()
        if state.interval in INTRADAY_MINUTES:
            length = timedelta(minutes=INTRADAY_MINUTES[state.interval])
            tick = live_prices.live_tick(self.settings.redis_url, symbol)
            live_bar = live_prices.extend_open_bar(history, tick, length)
        drawn, live_drawn = history, live_bar
        if not daily:
            drawn = history.assign(bar_time=display.in_zone(history["bar_time"], zone))
            if not live_bar.empty:
                live_drawn = live_bar.assign(bar_time=display.in_zone(live_bar["bar_time"], zone))
        figure = charts.instrument_figure(
            drawn, symbol, overlays or [], zone="trading day" if daily else zone
        )
        download = history.drop(columns=["bar_time_local", "exchange_timezone"], errors="ignore")
        if not daily:
            download = display.with_local_times(download, zone)
        _chart(
            live_prices.with_live_candle(figure, live_drawn),
            download,
            f"{symbol.replace('/', '-')}_{state.interval}",
        )

    def compare(self, engine: Engine, state: ViewState, catalog: pd.DataFrame) -> None:
        if not state.symbols:
            st.info("Pick one or more symbols in the sidebar to compare them.")
            return
        newest = catalog["last_bar"].max().to_pydatetime()
        since, until = view_state.window_bounds(state, newest)
        daily = view_state.compare_daily(since, until)
        interval = self.settings.interval
        symbols = list(state.symbols)
        closes = self.compare_closes(engine, symbols, interval, since, until, daily=daily)
        if closes.empty:
            st.info("None of these symbols has bars in this window: pick a longer one.")
            return
        zone = display.common_zone(
            display.display_zone(r.asset_class, r.exchange_timezone, utc=state.utc)
            for r in closes.drop_duplicates("symbol").itertuples(index=False)
        )
        rebased = self.rebased(engine, symbols, interval, since, until, daily=daily)
        grid = metrics.common_grid(closes, interval, daily=daily)
        st.caption(
            f"{'Daily' if daily else interval} points from {display.format_time(since, zone)}"
            f" to {display.format_time(until, zone)}. Rebased to 100 at each symbol's last close"
            " at or before the start (marketpipe.rebased). " + grid.description
        )
        _chart(
            charts.comparison_figure(
                rebased.assign(bar_time=display.in_zone(rebased["bar_time"], zone)), zone=zone
            ),
            display.with_local_times(rebased, zone),
            "rebased",
        )
        st.subheader("Summary")
        returns = self.period_returns(engine, symbols, interval, since, until)
        summary = metrics.performance_summary(grid, returns)
        decimals = returns.set_index("symbol")["price_decimals"]
        summary = summary.assign(price_decimals=summary["symbol"].map(decimals))
        st.dataframe(
            display.rounded(
                summary,
                prices=("start_close", "end_close"),
            ).drop(columns=["price_decimals"]),
            hide_index=True,
            column_config={
                "start_close": st.column_config.NumberColumn("close at start"),
                "end_close": st.column_config.NumberColumn("close at end"),
                "return_pct": st.column_config.NumberColumn("return %", format="%+.2f"),
                "volatility_pct": st.column_config.NumberColumn(
                    "volatility % (annualized)", format="%.1f"
                ),
                "max_drawdown_pct": st.column_config.NumberColumn("max drawdown %", format="%.2f"),
            },
        )
        _csv_button(summary.drop(columns=["price_decimals"]), "summary")
        grid_steps = metrics.grid_returns(grid)
        left, right = st.columns(2)
        with left:
            _chart(
                charts.returns_histogram(grid_steps),
                grid_steps.rename(columns={"bar_time": "trading_date"})
                if daily
                else display.with_local_times(grid_steps, zone),
                "returns",
            )
        with right:
            correlation = metrics.return_correlation(grid)
            _chart(
                charts.correlation_heatmap(correlation),
                correlation.reset_index(names="symbol"),
                "correlation",
            )

    def health(self, engine: Engine, catalog: pd.DataFrame) -> None:
        now = datetime.now(UTC)
        fresh = metrics.freshness_table(
            self.freshness(engine, self.settings.interval),
            self.settings.symbols,
            now,
            self.settings.fetch_schedule,
            FRESHNESS_GRACE,
        )
        behind = fresh[fresh["status"].isin(["late", "stale", "no data"])]
        if len(behind):
            st.warning(
                f"Stale data: {len(behind)} of {len(fresh)} symbols missed their scheduled fetch"
                f" ({self.settings.fetch_schedule}, UTC): "
                + ", ".join(f"{r.symbol} ({r.status})" for r in behind.itertuples()),
                icon=":material/schedule:",
            )
        else:
            st.success(f"All {len(fresh)} symbols are fresh.", icon="✅")
        st.subheader("Freshness per symbol")
        st.dataframe(
            fresh,
            hide_index=True,
            column_order=(
                "status",
                "symbol",
                "last_fetch",
                "fetch_age_minutes",
                "last_bar",
                "is_complete",
                "last_complete_bar",
                "loaded_at",
                "source",
                "asset_class",
            ),
            column_config={
                "fetch_age_minutes": st.column_config.NumberColumn("fetch age, min", format="%.0f")
            },
        )
        _csv_button(fresh, "freshness")
        st.subheader("Last runs")
        runs = self.recent_runs(engine)
        st.dataframe(runs, hide_index=True)
        _csv_button(runs, "runs")
        st.subheader("Queues")
        try:
            redis = queue_status.connect(self.settings.redis_url)
            depths, failed = queue_status.queue_depths(redis), queue_status.failed_jobs(redis)
        except Exception as exc:  # any Redis failure is a health finding, not a crash
            st.error(f"Redis at {self.settings.redis_url} did not answer: {exc}")
        else:
            st.dataframe(depths, hide_index=True)
            st.caption(f"{len(failed)} failed job(s) kept in RQ's failed-job registries.")
            if len(failed):
                st.dataframe(failed, hide_index=True)
                _csv_button(failed, "failed_jobs")
        st.subheader(f"Quarantine (last {QUARANTINE_LOOKBACK.days} days)")
        reasons = self.quarantine_reasons(engine, now - QUARANTINE_LOOKBACK)
        if reasons.empty:
            st.caption("Nothing quarantined.")
        else:
            st.dataframe(reasons, hide_index=True)
            rows = self.quarantine(engine, now - QUARANTINE_LOOKBACK)
            st.dataframe(rows, hide_index=True)
            _csv_button(rows, "quarantine")
        self.restatements_section(engine)
        live_prices.render_health(self.settings.redis_url)

    def restatements_section(self, engine: Engine) -> None:
        """History the vendor changed: open restatements warn, the newest ones are listed."""
        st.subheader("Restatements")
        found = self.restatements(engine)
        if found.empty:
            st.caption("No restatement recorded: every re-served bar matched the stored one.")
            return
        waiting = found[found["status"] == "detected"]
        if len(waiting):
            st.warning(
                f"{len(waiting)} series wait for a restatement (their new bars are held back"
                " until the history is re-fetched): "
                + ", ".join(f"{r.symbol} {r.interval} ({r.kind})" for r in waiting.itertuples()),
                icon=":material/history:",
            )
        st.dataframe(found, hide_index=True)
        _csv_button(found, "restatements")

    # -- the refreshing body --

    def render(self, state: ViewState) -> None:
        engine = _engine()
        catalog = self.catalog(engine, self.settings.interval)
        freshness = self.freshness(engine, self.settings.interval)
        if self.settings.demo_mode or "demo" in set(freshness["source"].dropna()):
            st.warning(
                "DEMO DATA: these prices are synthetic, served by the marketpipe sandbox."
                " Set TWELVE_DATA_API_KEY to load real market data.",
                icon="⚠️",
            )
        st.header(VIEWS[state.view])
        if state.view == "health":
            self.health(engine, catalog)
        elif catalog.empty:
            st.info(NO_DATA)
        elif state.view == "overview":
            self.market_overview(engine, state, catalog)
        elif state.view == "instrument":
            self.instrument(engine, state, catalog)
        else:
            self.compare(engine, state, catalog)
        st.caption(
            f"Last updated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC;"
            f" refreshes every {self.settings.dashboard_refresh_seconds} s."
        )


def main() -> None:
    settings = _settings()
    st.set_page_config(page_title="marketpipe", page_icon="📈", layout="wide")
    st.title("marketpipe")
    dashboard = Dashboard(settings)
    state = dashboard.controls(dashboard.catalog(_engine(), settings.interval))
    if state.view in ("overview", "instrument"):
        shown = settings.live_symbol_list[: settings.live_max_symbols]
        live_prices.render_strip(
            settings.redis_url,
            _engine(),
            [state.symbol] if state.symbol and state.view == "instrument" else shown,
            settings.interval,
        )
    # Only the body reruns on the timer: widgets keep their state and the page does not flash.
    live = st.fragment(run_every=timedelta(seconds=settings.dashboard_refresh_seconds))(
        dashboard.render
    )
    live(state)


main()
