"""marketpipe dashboard: market overview, instrument, comparison and pipeline health.

Layout only: SQL lives in queries.py, numbers in metrics.py, figures in charts.py, colours and
shared figure rules in theme.py. The app reads through the read-only role; the page body is a
fragment that refreshes itself. Every choice is in the URL (view_state.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, Final, TypeVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from marketpipe import runs
from marketpipe.db import reader_engine
from marketpipe.logs import redact
from marketpipe.market import INTRADAY_MINUTES, market_open, venue
from marketpipe.reach import Unreachable, check_postgres, postgres_address, reason_of, redis_address
from marketpipe.settings import Settings, load_settings
from services.dashboard import charts, display, metrics, queries, queue_status, theme, view_state
from services.dashboard import live as live_prices
from services.dashboard.view_state import CUSTOM, DAILY, PEER_AVERAGE, VIEWS, WINDOWS, ViewState

F = TypeVar("F", bound=Callable[..., Any])

# A fetch's rows are loaded within minutes of its tick; only after that is a missing one late.
FRESHNESS_GRACE = timedelta(minutes=10)
QUARANTINE_LOOKBACK = timedelta(days=7)
DATABASE_RETRY = timedelta(seconds=5)
FETCH_RUNS_SHOWN = 20
SPARKLINE_BUCKET = timedelta(hours=3)
PERFORMERS = 5
# Cards are a glance at a few instruments: each is a metric with a Vega sparkline, and 50 of
# them took 2.5 s of the overview's 3.9 s in Chromium at 10 M bars (the table, with the same
# figures and a canvas trend per row, 0.1-0.4 s). Beyond this many, the table stands alone.
MAX_CARDS = 12
# Grids that reflow with the width: as many columns of at least this width as fit (cards: four
# beside the sidebar at 1440 px, two at 800 px, one on a phone), each wide enough for a
# six-digit price at the metric's size, so nothing is cut to "…".
CARD_MIN_WIDTH = 220
FIGURE_MIN_WIDTH = 150
RESPONSIVE_CSS = f"""
<style>
.st-key-cards {{
  display: grid !important;
  grid-template-columns: repeat(auto-fill, minmax({CARD_MIN_WIDTH}px, 1fr));
  gap: 0.75rem;
}}
.st-key-key_figures {{
  display: grid !important;
  grid-template-columns: repeat(auto-fill, minmax({FIGURE_MIN_WIDTH}px, 1fr));
  gap: 0.25rem 0.75rem;
}}
.st-key-cards > div, .st-key-key_figures > div {{ width: auto !important; min-width: 0; }}
</style>
"""
# The day change's reference, short enough for a card: latest_quotes.reference -> its label.
MINUTES = "YYYY-MM-DD HH:mm"  # how a table shows a UTC time
REFERENCE_LABELS = {"previous session close": "vs prev. close", "24 hours": "vs 24 h ago"}
BENCHMARK_LABELS = {"": "nothing (rebased to 100)", PEER_AVERAGE: "peer average"}
BACKFILL_COMMAND = "python -m services.fetcher backfill --since {since:%Y-%m-%d}"
START_COMMAND = (
    "Start the pipeline with `make run` (or `docker compose up`); the fetcher loads the"
    " configured symbols at once and then at every FETCH_SCHEDULE tick."
)


@st.cache_resource
def _settings() -> Settings:
    return load_settings()


@st.cache_resource
def _engine() -> Engine:
    return reader_engine(_settings())


def _cached(function: F, ttl: int) -> F:
    """``function`` cached for one refresh interval, except empty results: a page viewed before
    the first load must show the data as soon as it is stored, not ``ttl`` seconds later."""
    cached = st.cache_data(
        ttl=ttl,
        show_spinner=False,
        hash_funcs={Engine: lambda engine: engine.url.render_as_string()},
    )(function)

    @wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = cached(*args, **kwargs)
        if isinstance(result, pd.DataFrame) and result.empty:
            cached.clear(*args, **kwargs)
        return result

    return call  # type: ignore[return-value]


# The columns every run-log table shows first (loader runs and fetch runs alike).
_RUN_COLUMNS: Final[dict[str, Any]] = {
    "finished_at": st.column_config.DatetimeColumn("Finished (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "component": "Component",
    "status": "Status",
}


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


def _chart(figure: go.Figure, data: pd.DataFrame, name: str, title: str) -> None:
    """A chart under its title, with a download of exactly the rows it draws."""
    st.markdown(f"**{title}**")
    st.plotly_chart(figure, key=f"chart_{name}", config=theme.PLOTLY_CONFIG)
    _csv_button(data, name)


def window_choice(start: object, end: object) -> str:
    # an unfinished custom range (one date picked so far) falls back to the default window
    window: str = st.session_state.window or view_state.DEFAULT_WINDOW
    return view_state.DEFAULT_WINDOW if window == CUSTOM and not (start and end) else window


def _first_bar(catalog: pd.DataFrame, symbols: list[str] | None = None) -> datetime | None:
    rows = catalog if symbols is None else catalog[catalog["symbol"].isin(symbols)]
    first = pd.to_datetime(rows["first_bar"], utc=True).min() if len(rows) else None
    return None if first is None or pd.isna(first) else first.to_pydatetime()


def _newest(catalog: pd.DataFrame, symbols: list[str] | None = None) -> datetime:
    rows = catalog if symbols is None else catalog[catalog["symbol"].isin(symbols)]
    return pd.to_datetime(rows["last_bar"], utc=True).max().to_pydatetime()


def _forget_unknown() -> None:
    # The analyst chose symbols themselves: the link's unknown ones are no longer news.
    st.session_state.unknown = []


def _series_views(
    frame: pd.DataFrame, zone: str, *, daily: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(what a chart draws, what its CSV holds) of a long frame with ``bar_time``: UTC times
    drawn in ``zone`` with both times in the CSV, or trading days as they are."""
    if daily:
        return frame, frame.rename(columns={"bar_time": "trading_date"})
    drawn = frame.assign(bar_time=display.in_zone(frame["bar_time"], zone))
    return drawn, display.with_local_times(frame, zone)


def short_history_notice(
    catalog: pd.DataFrame, since: datetime, window: str, symbols: list[str]
) -> None:
    """Say which symbols' stored history begins inside the window and how to backfill it."""
    short = metrics.short_histories(catalog, since, symbols)
    if short.empty:
        return
    listed = ", ".join(
        f"{r.symbol} ({r.history_days:.1f} days, since {r.first_bar:%Y-%m-%d})"
        for r in short.itertuples()
    )
    st.info(
        f"The {view_state.label(window)} window starts {since:%Y-%m-%d %H:%M} UTC, before the"
        f" stored history of {listed}: their window return is blank (no close at the start) and"
        " they are left out of rebased and relative charts. Backfill the history with"
        f" `{BACKFILL_COMMAND.format(since=since)}`.",
        icon=":material/history:",
    )


def exchange_badges(catalog: pd.DataFrame, now: datetime) -> str:
    """One badge per venue of the shown symbols: open or closed now, and until when."""
    badges = []
    seen: set[tuple[str, str]] = set()
    for row in catalog.sort_values(["asset_class", "exchange"]).itertuples(index=False):
        stock = row.asset_class == "stock"
        zone = row.exchange_timezone if isinstance(row.exchange_timezone, str) else None
        exchange = str(row.exchange) if stock and isinstance(row.exchange, str) else ""
        key = (str(row.asset_class), exchange)
        if key in seen:
            continue
        seen.add(key)
        place = venue(key[0], zone if stock else None)
        is_open, change = market_open(place, now)
        name = exchange or place.calendar if stock else key[0].capitalize()
        if change is None:
            badges.append(f":green-badge[{name} · open 24/7]")
            continue
        when = display.format_time(change, place.timezone)
        if is_open:
            badges.append(f":green-badge[{name} · open until {when}]")
        else:
            badges.append(f":gray-badge[{name} · closed, opens {when}]")
    return " ".join(badges)


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
        self.key_figures = _cached(queries.key_figures, ttl)
        self.period_returns = _cached(queries.period_returns, ttl)
        self.rebased = _cached(queries.rebased, ttl)
        self.freshness = _cached(queries.freshness, ttl)
        self.recent_runs = _cached(queries.recent_runs, ttl)
        self.fetch_runs = _cached(runs.fetch_runs, ttl)
        self.restatement_runs = _cached(runs.restatement_runs, ttl)
        self.quarantine = _cached(queries.quarantine, ttl)
        self.quarantine_reasons = _cached(queries.quarantine_reasons, ttl)
        self.restatements = _cached(queries.restatements, ttl)
        self.configured_series = _cached(queries.configured_series, ttl)
        self.stored_intervals = _cached(queries.stored_intervals, ttl)

    # -- controls (outside the fragment: a change reruns the page and rewrites the URL) --

    def _load_url(self, known: list[str], intervals: list[str]) -> None:
        # First run of this session: the URL (a shared link) decides the initial choices.
        initial = view_state.parse(
            st.query_params.to_dict(), known, intervals, list(charts.OVERLAYS)
        )
        st.session_state.update(
            view=initial.view,
            window=initial.window,
            symbol=initial.symbol,
            symbols=list(initial.symbols),
            interval=initial.interval,
            utc=initial.utc,
            overlays=list(initial.overlays),
            log_scale=initial.log_scale,
            relative=initial.relative,
            unknown=list(initial.unknown),
            url_loaded=True,
        )
        if initial.start and initial.end:
            st.session_state.custom_range = (initial.start, initial.end)

    def _horizon(self, catalog: pd.DataFrame) -> tuple[Any, Any]:
        """The horizon buttons on the page (and the dates of a custom window)."""
        start = end = None
        row = st.container(horizontal=True, vertical_alignment="bottom")
        with row:
            st.segmented_control(
                "Horizon",
                [*WINDOWS, CUSTOM],
                format_func=view_state.label,
                key="window",
                label_visibility="collapsed",
                wrap=True,
            )
            if st.session_state.window == CUSTOM:
                newest = _newest(catalog) if len(catalog) else datetime.now(UTC)
                st.session_state.setdefault(
                    "custom_range", ((newest - timedelta(days=30)).date(), newest.date())
                )
                chosen = st.date_input(
                    "Dates (UTC)", key="custom_range", label_visibility="collapsed", width=240
                )
                if isinstance(chosen, tuple) and len(chosen) == 2:
                    start, end = chosen
        return start, end

    def controls(self, catalog: pd.DataFrame) -> ViewState:
        known = catalog["symbol"].tolist()
        if "url_loaded" not in st.session_state:
            self._load_url(known, [*self.settings.intervals, DAILY])
        with st.sidebar:
            st.radio("View", list(VIEWS), format_func=VIEWS.__getitem__, key="view")
            if known and st.session_state.view == "instrument":
                if st.session_state.get("symbol") not in known:
                    st.session_state.symbol = known[0]
                st.selectbox("Symbol", known, key="symbol", on_change=_forget_unknown)
            if known and st.session_state.view == "compare":
                st.session_state.symbols = [s for s in st.session_state.symbols if s in known]
                st.multiselect("Symbols", known, key="symbols", on_change=_forget_unknown)
                benchmarks = ["", PEER_AVERAGE, *st.session_state.symbols]
                if st.session_state.get("relative") not in benchmarks:
                    st.session_state.relative = ""
                st.selectbox(
                    "Relative to",
                    benchmarks,
                    format_func=lambda b: BENCHMARK_LABELS.get(b, b),
                    key="relative",
                    help="100 = moving with the benchmark: above it, the symbol did better.",
                )
            st.toggle(
                "Times in UTC",
                key="utc",
                help="Off: stock bars in their exchange's time (zone named), crypto in UTC.",
            )
        start = end = None
        if known and st.session_state.view != "health":
            start, end = self._horizon(catalog)
        window = window_choice(start, end)
        if known and st.session_state.view == "instrument":
            self._chart_controls(ViewState(window=window, start=start, end=end), catalog)
        if known and st.session_state.view == "compare":
            st.toggle("Log scale", key="log_scale")
        state = ViewState(
            view=st.session_state.view,
            window=window,
            start=start,
            end=end,
            symbol=st.session_state.get("symbol"),
            symbols=tuple(st.session_state.get("symbols", ())),
            interval=st.session_state.get("interval", self.settings.interval),
            utc=bool(st.session_state.get("utc", False)),
            overlays=tuple(o for o in charts.OVERLAYS if o in st.session_state.get("overlays", [])),
            log_scale=bool(st.session_state.get("log_scale", False)),
            relative=str(st.session_state.get("relative") or ""),
            unknown=tuple(st.session_state.get("unknown", ())),
        )
        st.query_params.from_dict(view_state.to_params(state))
        return state

    def _chart_controls(self, chosen: ViewState, catalog: pd.DataFrame) -> None:
        """Interval, overlays and scale of the instrument chart, on one wrapping row."""
        symbol = st.session_state.symbol
        since, until = view_state.window_bounds(
            chosen, _newest(catalog, [symbol]), _first_bar(catalog, [symbol])
        )
        stored = self.stored_intervals(_engine(), symbol) or [self.settings.interval]
        options = view_state.intervals_for(since, until, stored)
        if st.session_state.get("interval") not in options:
            st.session_state.interval = options[0]
        with st.container(horizontal=True, vertical_alignment="bottom"):
            st.segmented_control(
                "Interval",
                options,
                key="interval",
                required=True,
                help="Stored intraday bars for windows up to a month; daily bars for any"
                " window (the API's when stored, else aggregated from hourly bars).",
            )
            st.pills(
                "Overlays", list(charts.OVERLAYS), selection_mode="multi", key="overlays", wrap=True
            )
            st.toggle("Log scale", key="log_scale")

    # -- pages --

    def market_overview(self, engine: Engine, state: ViewState, catalog: pd.DataFrame) -> None:
        newest = _newest(catalog)
        since, until = view_state.window_bounds(state, newest, _first_bar(catalog))
        window_label = (
            view_state.label(state.window)
            if state.window in WINDOWS
            else (f"since {since:%Y-%m-%d}")
        )
        st.markdown(exchange_badges(catalog, datetime.now(UTC)))
        table = self.overview(engine, self.settings.interval, since, until)
        classes = sorted(table["asset_class"].unique())
        chosen = st.pills(
            "Asset class", classes, selection_mode="multi", default=classes, key="asset_classes"
        )
        table = table[table["asset_class"].isin(chosen or classes)].reset_index(drop=True)
        short_history_notice(catalog, since, state.window, table["symbol"].tolist())
        zones = [
            display.display_zone(r.asset_class, r.exchange_timezone, utc=state.utc)
            for r in table.itertuples(index=False)
        ]
        table = table.assign(
            zone=zones,
            currency=[
                display.currency_of(c, s)
                for c, s in zip(table["currency"], table["symbol"], strict=True)
            ],
            last_bar_local=[
                display.format_time(t, z) for t, z in zip(table["last_bar"], zones, strict=True)
            ],
        )
        spark_frame = self.sparklines(
            engine, self.settings.interval, newest - timedelta(days=7), newest, SPARKLINE_BUCKET
        )
        spark = metrics.sparkline_points(spark_frame[spark_frame["symbol"].isin(table["symbol"])])
        if len(table) <= MAX_CARDS:
            self._cards(table, spark, window_label)
        else:
            st.caption(
                f"{len(table)} instruments: the table below shows them all (cards show when at"
                f" most {MAX_CARDS} are chosen)."
            )
        _csv_button(display.with_local_times(spark_frame, "UTC"), "sparklines_7d")
        self._overview_table(table, spark, window_label, since)
        best, worst = metrics.best_and_worst(table, PERFORMERS)
        # A ranking, not a verdict: with few instruments (or a falling market) the top half can
        # hold losses, so the titles say "highest" and "lowest", never "best" for a loss.
        left, right = st.columns(2)
        with left:
            title = f"Highest returns over {window_label}"
            _chart(charts.performers_figure(best), best, "best", title)
        with right:
            title = f"Lowest returns over {window_label}"
            _chart(charts.performers_figure(worst), worst, "worst", title)
        if len(best) + len(worst) < 2 * PERFORMERS:
            st.caption(
                f"{len(best) + len(worst)} instruments with a return over {window_label}: the"
                " ranking is split in halves, so no instrument is listed twice."
            )

    def _cards(self, table: pd.DataFrame, spark: dict[str, list[float]], window_label: str) -> None:
        with st.container(key="cards"):
            for row in table.to_dict("records"):
                with st.container(gap=None):
                    st.metric(
                        f"{row['symbol']} · {row['asset_class']} · {row['currency']}",
                        display.price(row["last_price"], row["price_decimals"]),
                        display.signed_percent(row["day_pct_change"])
                        if pd.notna(row["day_pct_change"])
                        else None,
                        delta_description=REFERENCE_LABELS.get(row["reference"], "vs reference"),
                        chart_data=spark.get(row["symbol"]),
                        border=True,
                        help=f"{row['instrument_name'] or row['symbol']}; last bar"
                        f" {row['last_bar_local']}"
                        + ("" if row["is_complete"] else " (still open)"),
                    )
                    st.caption(
                        f"7 d {display.signed_percent(row['change_7d'])} ·"
                        f" {window_label} {display.signed_percent(row['change_window'])}"
                    )

    def _overview_table(
        self, table: pd.DataFrame, spark: dict[str, list[float]], window_label: str, since: datetime
    ) -> None:
        st.subheader("All instruments")
        shown = table.assign(trend=table["symbol"].map(spark))
        st.dataframe(
            display.styled(
                shown,
                prices=("last_price", "day_change", "high_52w", "low_52w"),
                percents=("day_pct_change", "change_7d", "change_window"),
                counts=("avg_volume_20d",),
            ),
            placeholder=theme.MISSING,
            hide_index=True,
            column_order=(
                "symbol",
                "instrument_name",
                "asset_class",
                "currency",
                "last_price",
                "day_change",
                "day_pct_change",
                "change_7d",
                "change_window",
                "high_52w",
                "low_52w",
                "avg_volume_20d",
                "trend",
                "last_bar_local",
            ),
            column_config={
                "symbol": st.column_config.TextColumn("Symbol", pinned=True),
                "instrument_name": st.column_config.TextColumn("Name"),
                "asset_class": st.column_config.TextColumn("Class"),
                "currency": st.column_config.TextColumn("Ccy"),
                "last_price": st.column_config.NumberColumn("Last"),
                "day_change": st.column_config.NumberColumn(
                    "Day chg", help="Stocks vs the previous session's close; crypto vs 24 h."
                ),
                "day_pct_change": st.column_config.NumberColumn("Day %"),
                "change_7d": st.column_config.NumberColumn("7 d %"),
                "change_window": st.column_config.NumberColumn(f"{window_label} %"),
                "high_52w": st.column_config.NumberColumn("52 w high"),
                "low_52w": st.column_config.NumberColumn("52 w low"),
                "avg_volume_20d": st.column_config.NumberColumn("Avg vol (20 d)"),
                "trend": st.column_config.LineChartColumn("7 days"),
                "last_bar_local": st.column_config.TextColumn("Last bar"),
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

    def key_figures_strip(self, engine: Engine, symbol: str, decimals: int) -> None:
        """Previous close, day range, 52-week range, ATR, volatility, VWAP, average volume."""
        figures = self.key_figures(engine, symbol, self.settings.interval)
        if figures.empty:
            return
        row = figures.iloc[0]

        def price(value: Any) -> str:
            return display.price(value, decimals)

        def price_range(low: Any, high: Any) -> str:
            if pd.isna(low) or pd.isna(high):
                return theme.MISSING
            return f"{price(low)} to {price(high)}"

        reference = "Prev. close" if row["reference"] == "previous session close" else "24 h ago"
        items = [
            (reference, price(row["previous_close"])),
            ("Day range", price_range(row["day_low"], row["day_high"])),
            ("52-week range", price_range(row["low_52w"], row["high_52w"])),
            ("ATR 14", price(row["atr_14"])),
            (
                "Volatility 20 (ann.)",
                theme.MISSING
                if pd.isna(row["volatility_20"])
                else f"{100 * row['volatility_20']:.1f}%",
            ),
            ("Session VWAP", price(row["vwap_session"])),
            (
                "Avg volume (20 d)",
                theme.MISSING
                if pd.isna(row["avg_volume_20d"])
                else f"{row['avg_volume_20d']:,.0f}",
            ),
        ]
        with st.container(key="key_figures"):
            for name, value in items:
                with st.container(gap=None):
                    st.caption(name)
                    st.markdown(f"**{value}**")

    def instrument(self, engine: Engine, state: ViewState, catalog: pd.DataFrame) -> None:
        symbol = state.symbol
        if symbol is None:
            return
        since, until = view_state.window_bounds(
            state, _newest(catalog, [symbol]), _first_bar(catalog, [symbol])
        )
        quote = self.quote(engine, symbol, self.settings.interval, since, until)
        info = quote.iloc[0] if len(quote) else None
        daily = state.interval == DAILY
        # Daily bars from the API (INTERVALS with 1day) when stored, else aggregated from 1h.
        api_daily = daily and DAILY in self.stored_intervals(engine, symbol)
        if daily:
            history = self.daily_bars(engine, symbol, since, until, from_api=api_daily)
        else:
            history = self.bars(engine, symbol, state.interval, since, until)
        if history.empty or info is None:
            st.info(
                f"No {symbol} bars between {since:%Y-%m-%d} and {until:%Y-%m-%d}:"
                " pick a longer window."
            )
            return
        short_history_notice(catalog, since, state.window, [symbol])
        zone = display.display_zone(info["asset_class"], info["exchange_timezone"], utc=state.utc)
        decimals = int(info["price_decimals"])
        currency = display.currency_of(
            catalog.loc[catalog["symbol"] == symbol, "currency"].iloc[0], symbol
        )
        last = history.iloc[-1]
        status = "still open" if not last["is_complete"] else "closed"
        st.metric(
            f"{symbol} last close, {currency} ({state.interval}, bar {status})",
            display.price(info["close"], decimals),
            display.signed_percent(info["day_pct_change"])
            if pd.notna(info["day_pct_change"])
            else None,
            delta_description=f"vs {info['reference']}",
            help=f"last bar {display.format_time(info['bar_time'], zone)}",
            width="content",
        )
        st.caption(
            f"Return over {view_state.label(state.window)}:"
            f" {display.signed_percent(info['window_return'])}"
            f" · times in {zone if not daily else 'trading days'}"
            + (" · daily bars from the API" if api_daily else "")
        )
        self.key_figures_strip(engine, symbol, decimals)
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
            drawn,
            symbol,
            state.overlays,
            zone=zone,
            decimals=decimals,
            currency=currency,
            log_scale=state.log_scale,
            daily=daily,
        )
        download = history.drop(columns=["bar_time_local", "exchange_timezone"], errors="ignore")
        if not daily:
            download = display.with_local_times(download, zone)
        _chart(
            live_prices.with_live_candle(figure, live_drawn),
            download,
            f"{symbol.replace('/', '-')}_{state.interval}",
            f"{symbol} · {view_state.label(state.window)} · {state.interval} bars",
        )

    def compare(self, engine: Engine, state: ViewState, catalog: pd.DataFrame) -> None:
        if not state.symbols:
            st.info("Pick one or more symbols in the sidebar to compare them.")
            return
        symbols = list(state.symbols)
        newest = _newest(catalog, symbols)
        since, until = view_state.window_bounds(state, newest, _first_bar(catalog, symbols))
        daily = view_state.compare_daily(since, until)
        weekly = view_state.compare_weekly(since, until)
        interval = self.settings.interval
        closes = self.compare_closes(
            engine, symbols, interval, since, until, daily=daily, weekly=weekly
        )
        if closes.empty:
            st.info("None of these symbols has bars in this window: pick a longer one.")
            return
        short_history_notice(catalog, since, state.window, symbols)
        colours = theme.symbol_colours(catalog["symbol"])
        zone = display.common_zone(
            display.display_zone(r.asset_class, r.exchange_timezone, utc=state.utc)
            for r in closes.drop_duplicates("symbol").itertuples(index=False)
        )
        grid = metrics.common_grid(closes, interval, daily=daily, weekly=weekly)
        returns = self.period_returns(engine, symbols, interval, since, until)
        if state.relative:
            self._relative_chart(state, grid, returns, colours, zone, daily)
        else:
            rebased = self.rebased(
                engine, symbols, interval, since, until, daily=daily, weekly=weekly
            )
            st.caption(
                f"{'Weekly' if weekly else 'Daily' if daily else interval} points from"
                f" {display.format_time(since, zone)}"
                f" to {display.format_time(until, zone)}. Rebased to 100 at each symbol's last"
                " close at or before the start (marketpipe.rebased). " + grid.description
            )
            drawn, download = _series_views(rebased, zone, daily=daily)
            _chart(
                charts.comparison_figure(
                    drawn, colours, zone=zone, log_scale=state.log_scale, daily=daily
                ),
                download,
                "rebased",
                "Performance, rebased to 100 at the start of the window",
            )
        self._summary(grid, returns)
        grid_steps = metrics.grid_returns(grid)
        # One above the other, full width: side by side, the heatmap of eight is unreadable
        # below ~1200 px.
        _chart(
            charts.returns_distribution(grid_steps, colours),
            grid_steps.rename(columns={"bar_time": "trading_date"})
            if daily
            else display.with_local_times(grid_steps, zone),
            "returns",
            "Distribution of returns on the common grid",
        )
        correlation = metrics.return_correlation(grid)
        _chart(
            charts.correlation_heatmap(correlation),
            correlation.reset_index(names="symbol"),
            "correlation",
            "Correlation of returns on the common grid",
        )

    def _relative_chart(
        self,
        state: ViewState,
        grid: metrics.Grid,
        returns: pd.DataFrame,
        colours: dict[str, str],
        zone: str,
        daily: bool,
    ) -> None:
        benchmark = "the peer average" if state.relative == PEER_AVERAGE else state.relative
        relative = metrics.relative_performance(
            grid, returns.set_index("symbol")["start_close"], state.relative, PEER_AVERAGE
        )
        st.caption(
            f"Each symbol's rebased index divided by {benchmark}'s, on the common grid: 100 ="
            " moving with it, above = doing better. " + grid.description
        )
        drawn, download = _series_views(relative, zone, daily=daily)
        _chart(
            charts.comparison_figure(
                drawn,
                colours,
                zone=zone,
                y_title=f"relative to {benchmark} (100 = same)",
                log_scale=state.log_scale,
                daily=daily,
            ),
            download,
            "relative",
            f"Performance relative to {benchmark}",
        )

    def _summary(self, grid: metrics.Grid, returns: pd.DataFrame) -> None:
        st.subheader("Summary")
        summary = metrics.performance_summary(grid, returns)
        decimals = returns.set_index("symbol")["price_decimals"]
        summary = summary.assign(price_decimals=summary["symbol"].map(decimals))
        st.dataframe(
            display.styled(
                summary,
                prices=("start_close", "end_close"),
                percents=("return_pct", "max_drawdown_pct"),
                counts=("grid_points",),
            ).format("{:.1f}", subset=["volatility_pct"], na_rep=theme.MISSING),
            placeholder=theme.MISSING,
            hide_index=True,
            column_order=[c for c in summary.columns if c != "price_decimals"],
            column_config={
                "symbol": st.column_config.TextColumn("Symbol"),
                "start_close": st.column_config.NumberColumn("Close at start"),
                "end_close": st.column_config.NumberColumn("Close at end"),
                "return_pct": st.column_config.NumberColumn("Return %"),
                "volatility_pct": st.column_config.NumberColumn("Volatility % (ann.)"),
                "max_drawdown_pct": st.column_config.NumberColumn("Max drawdown %"),
                "grid_points": st.column_config.NumberColumn("Grid points"),
            },
        )
        _csv_button(summary.drop(columns=["price_decimals"]), "summary")

    # -- pipeline health: one function per section --

    def fetcher_state(self) -> metrics.FetcherState | None:
        try:
            return queue_status.fetcher_state(queue_status.connect(self.settings.redis_url))
        except Exception:  # Redis down: the queues section says so
            return None

    def health(self, engine: Engine, catalog: pd.DataFrame) -> None:
        now = datetime.now(UTC)
        fetcher = self.fetcher_state() or metrics.FetcherState(None, None)
        self.health_freshness(engine, now, fetcher)
        self.fetch_runs_section(engine)
        self.health_runs(engine)
        self.health_queues()
        self.health_quarantine(engine, now)
        self.restatements_section(engine)
        self.configured_series_section(engine)
        live_prices.render_health(self.settings.redis_url)

    def health_freshness(
        self, engine: Engine, now: datetime, fetcher: metrics.FetcherState
    ) -> None:
        fresh = metrics.freshness_table(
            self.freshness(engine, self.settings.interval),
            self.settings.symbols,
            now,
            self.settings.fetch_schedule,
            FRESHNESS_GRACE,
            fetcher,
        )
        behind = fresh[fresh["status"].isin(metrics.BEHIND)]
        waiting = fresh[~fresh["status"].isin([*metrics.BEHIND, "fresh"])]
        if len(behind):
            st.warning(
                f"Stale data: {len(behind)} of {len(fresh)} symbols missed their scheduled fetch"
                f" ({self.settings.fetch_schedule}, UTC): "
                + ", ".join(f"{r.symbol} ({r.status})" for r in behind.itertuples()),
                icon=":material/schedule:",
            )
        elif len(waiting):
            st.info(first_fetch_line(fetcher, len(waiting)), icon=":material/hourglass_top:")
        else:
            st.success(f"All {len(fresh)} symbols are fresh.", icon="✅")
        st.subheader("Freshness per symbol")
        st.dataframe(
            display.styled(fresh, counts=("fetch_age_minutes",)),
            placeholder=theme.MISSING,
            hide_index=True,
            column_order=(
                "status",
                "symbol",
                "last_fetch",
                "fetch_age_minutes",
                "last_bar",
                "is_complete",
                "loaded_at",
                "source",
            ),
            column_config={
                "status": st.column_config.TextColumn("Status"),
                "symbol": st.column_config.TextColumn("Symbol"),
                "last_fetch": st.column_config.DatetimeColumn("Last fetch (UTC)", format=MINUTES),
                "fetch_age_minutes": st.column_config.NumberColumn("Age, min"),
                "last_bar": st.column_config.DatetimeColumn("Newest bar (UTC)", format=MINUTES),
                "is_complete": st.column_config.CheckboxColumn("Bar closed"),
                "loaded_at": st.column_config.DatetimeColumn("Loaded (UTC)", format=MINUTES),
                "source": st.column_config.TextColumn("Source"),
            },
        )
        _csv_button(fresh, "freshness")

    def health_runs(self, engine: Engine) -> None:
        st.subheader("Last runs")
        runs = self.recent_runs(engine)
        st.dataframe(
            runs,
            placeholder=theme.MISSING,
            hide_index=True,
            column_config={
                **_RUN_COLUMNS,
                "symbol": "Symbol",
                "interval": "Interval",
                "rows_in": st.column_config.NumberColumn("Rows in"),
                "rows_loaded": st.column_config.NumberColumn("Loaded"),
                "rows_quarantined": st.column_config.NumberColumn("Quarantined"),
                "message": "Message",
            },
        )
        _csv_button(runs, "runs")

    def health_queues(self) -> None:
        st.subheader("Queues")
        try:
            redis = queue_status.connect(self.settings.redis_url)
            depths, failed = queue_status.queue_depths(redis), queue_status.failed_jobs(redis)
        except Exception as exc:  # any Redis failure is a health finding, not a crash
            # The address only: a password in REDIS_URL is never shown.
            where = redis_address(self.settings.redis_url)
            st.error(f"Redis at {where} (REDIS_URL) did not answer: {redact(reason_of(exc))}")
            return
        st.dataframe(
            depths,
            placeholder=theme.MISSING,
            hide_index=True,
            column_config={name: name.capitalize() for name in depths.columns},
        )
        st.caption(f"{len(failed)} failed job(s) kept in RQ's failed-job registries.")
        if len(failed):
            st.dataframe(
                failed,
                placeholder=theme.MISSING,
                hide_index=True,
                column_config={
                    "queue": "Queue",
                    "job_id": "Job",
                    "function": "Function",
                    "failed_at": st.column_config.DatetimeColumn("Failed (UTC)", format=MINUTES),
                    "error": "Error",
                },
            )
            _csv_button(failed, "failed_jobs")

    def health_quarantine(self, engine: Engine, now: datetime) -> None:
        st.subheader(f"Quarantine (last {QUARANTINE_LOOKBACK.days} days)")
        reasons = self.quarantine_reasons(engine, now - QUARANTINE_LOOKBACK)
        if reasons.empty:
            st.caption("Nothing quarantined.")
            return
        st.dataframe(
            reasons,
            placeholder=theme.MISSING,
            hide_index=True,
            column_config={
                "reason": "Reason",
                "rows": st.column_config.NumberColumn("Rows"),
                "last_seen": st.column_config.DatetimeColumn("Last seen (UTC)", format=MINUTES),
            },
        )
        rows = self.quarantine(engine, now - QUARANTINE_LOOKBACK)
        st.dataframe(
            rows,
            placeholder=theme.MISSING,
            hide_index=True,
            column_config={
                "quarantined_at": st.column_config.DatetimeColumn(
                    "Quarantined (UTC)", format=MINUTES
                ),
                "symbol": "Symbol",
                "interval": "Interval",
                "row_key": "Row",
                "reason": "Reason",
                "payload_id": "Payload",
            },
        )
        _csv_button(rows, "quarantine")

    # -- before the first bar --

    def no_data_yet(self, engine: Engine) -> None:
        """What the pipeline is doing before the first bar is stored, from its own state."""
        fetcher = self.fetcher_state()
        landed = queries.landed(engine, self.settings.interval).iloc[0]  # never cached
        payloads = int(landed["payloads"])
        refresh = self.settings.dashboard_refresh_seconds
        if fetcher is not None and fetcher.running_tick is not None:
            st.info(
                f"First fetch in progress (tick {fetcher.running_tick:%H:%M} UTC):"
                f" {payloads} of {len(self.settings.symbols)} series landed so far. Bars appear"
                " here as soon as the loader stores them; this page looks again every"
                f" {refresh} s.",
                icon=":material/hourglass_top:",
            )
        elif payloads:
            st.info(
                f"The first fetch landed {payloads} payload(s) (newest"
                f" {display.format_time(landed['newest'], 'UTC')}); waiting for the transformer"
                " and loader workers to store their bars. Are they running (`make run`)?",
                icon=":material/hourglass_top:",
            )
        elif fetcher is not None and fetcher.last_tick is not None:
            st.warning(
                f"The fetcher finished its tick of {fetcher.last_tick:%Y-%m-%d %H:%M} UTC but no"
                " data is stored: see Pipeline health for the API's answers.",
                icon=":material/warning:",
            )
        else:
            st.info(f"No data yet, and no fetcher has started a fetch. {START_COMMAND}")

    def fetch_runs_section(self, engine: Engine) -> None:
        """What the fetcher did: a row per fetch cycle and backfill window (pipeline_runs)."""
        st.subheader("Fetch cycles and backfill windows")
        fetches = self.fetch_runs(engine, FETCH_RUNS_SHOWN)
        if fetches.empty:
            st.caption("No fetch cycle recorded yet.")
            return
        failing = fetches[fetches["status"].isin(["failed", "partial"])]
        if len(failing):
            st.warning(
                f"{len(failing)} of the last {len(fetches)} fetch runs had API errors; newest: "
                + str(failing.iloc[0]["message"] or failing.iloc[0]["status"]),
                icon=":material/error:",
            )
        st.dataframe(
            fetches,
            placeholder=theme.MISSING,
            hide_index=True,
            # The message before the long run id, which comes last and narrow (the whole id is
            # in the CSV): at 1440 px the id pushed "Message" out of the table's box.
            column_order=(
                "finished_at",
                "component",
                "status",
                "message",
                "symbols_asked",
                "symbols_new",
                "credits",
                "waited_seconds",
                "api_errors",
                "run_id",
            ),
            column_config={
                **_RUN_COLUMNS,
                "run_id": st.column_config.TextColumn("Run", width="small"),
                "symbols_asked": st.column_config.NumberColumn("Symbols asked"),
                "symbols_new": st.column_config.NumberColumn("With new data"),
                "credits": st.column_config.NumberColumn("Credits"),
                "waited_seconds": st.column_config.NumberColumn("Waited, s", format="%.0f"),
                "api_errors": st.column_config.NumberColumn("API errors"),
                "message": "Message",
            },
        )
        _csv_button(fetches, "fetch_runs")

    def restatement_runs_table(self, engine: Engine) -> None:
        """The run log's restatement rows: re-fetch (fetcher) and swap (loader), newest first."""
        restated = self.restatement_runs(engine, FETCH_RUNS_SHOWN)
        if not restated.empty:
            st.caption("Restatements: a row per re-fetch and swap of a restated series")
            st.dataframe(
                restated,
                hide_index=True,
                column_config={
                    **_RUN_COLUMNS,
                    "windows": st.column_config.NumberColumn("Windows"),
                    "credits": st.column_config.NumberColumn("Credits"),
                    "rows_replaced": st.column_config.NumberColumn("Rows replaced"),
                    "rows_removed": st.column_config.NumberColumn("Rows removed"),
                    "message": "Message",
                },
            )

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
        st.dataframe(found, placeholder=theme.MISSING, hide_index=True)
        _csv_button(found, "restatements")
        self.restatement_runs_table(engine)

    def configured_series_section(self, engine: Engine) -> None:
        """Every configured series: a new one's automatic backfill, a removed one inactive."""
        st.subheader("Configured series")
        series = self.configured_series(engine)
        if series.empty:
            st.caption("No fetcher has recorded its SYMBOLS and INTERVALS yet.")
            return
        running = series[series["backfill_status"] == "running"]
        if len(running):
            st.info(
                f"{len(running)} new series backfilling to BACKFILL_SINCE: "
                + ", ".join(
                    f"{r.symbol} {r.interval} ({r.windows_done}/{r.windows_total} windows)"
                    for r in running.itertuples()
                ),
                icon=":material/downloading:",
            )
        inactive = series[series["status"] == "inactive"]
        if len(inactive):
            st.caption(
                "Inactive (no longer in SYMBOLS or INTERVALS; not fetched, history kept): "
                + ", ".join(f"{r.symbol} {r.interval}" for r in inactive.itertuples())
            )
        st.dataframe(
            series,
            hide_index=True,
            column_config={
                "status": "Status",
                "symbol": "Symbol",
                "interval": "Interval",
                "configured_at": st.column_config.DatetimeColumn("Configured"),
                "removed_at": st.column_config.DatetimeColumn("Removed"),
                "backfill_since": st.column_config.DateColumn("Backfill since"),
                "backfill_status": "Backfill",
                "windows_done": st.column_config.NumberColumn("Windows done"),
                "windows_total": st.column_config.NumberColumn("Windows"),
                "backfill_message": "Message",
                "updated_at": st.column_config.DatetimeColumn("Updated"),
            },
        )
        _csv_button(series, "configured_series")

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
        if state.view == "health":
            self.health(engine, catalog)
        elif catalog.empty:
            self.no_data_yet(engine)
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


def database_unreachable(settings: Settings, exc: BaseException) -> None:
    """A short notice instead of SQLAlchemy's traceback; the page comes back when it answers."""
    where = postgres_address(settings.role_url("reader"))
    st.error(
        f"Database unreachable: PostgreSQL at {where} (DATABASE_URL) does not answer"
        f" ({redact(reason_of(exc))}). This page tries again every"
        f" {DATABASE_RETRY.total_seconds():.0f} s.",
        icon=":material/database:",
    )

    @st.fragment(run_every=DATABASE_RETRY)
    def retry() -> None:
        try:
            check_postgres(settings.role_url("reader"))
        except Unreachable:
            return
        st.rerun()

    retry()


def first_fetch_line(fetcher: metrics.FetcherState, waiting: int) -> str:
    if fetcher.running_tick is not None:
        return (
            f"First fetch in progress (tick {fetcher.running_tick:%H:%M} UTC): {waiting}"
            " symbol(s) not stored yet. Nothing is late before their first fetch is done."
        )
    return f"{waiting} symbol(s) wait for the fetcher's first fetch. {START_COMMAND}"


def unknown_symbols_notice(state: ViewState, known: list[str]) -> None:
    if not state.unknown:
        return
    shown = state.symbol if state.view == "instrument" else ", ".join(state.symbols)
    st.warning(
        f"The link names {', '.join(state.unknown)}, which this database does not hold"
        f" (it holds {', '.join(known) or 'no symbols yet'}). Showing {shown or 'nothing'}"
        " instead.",
        icon=":material/link_off:",
    )


def main() -> None:
    settings = _settings()
    st.set_page_config(page_title="marketpipe", page_icon="📈", layout="wide")
    dashboard = Dashboard(settings)
    try:
        catalog = dashboard.catalog(_engine(), settings.interval)
    except OperationalError as exc:
        database_unreachable(settings, exc.orig or exc)
        return
    st.html(RESPONSIVE_CSS)
    title = st.empty()  # first on the page, named once the sidebar says which view
    state = dashboard.controls(catalog)
    title.title(VIEWS[state.view])
    unknown_symbols_notice(state, catalog["symbol"].tolist())
    if state.view in ("overview", "instrument"):
        shown = settings.live_symbol_list[: settings.live_max_symbols]
        live_prices.render_strip(
            settings.redis_url,
            _engine(),
            [state.symbol] if state.symbol and state.view == "instrument" else shown,
            settings.interval,
        )

    # Only the body reruns on the timer: widgets keep their state and the page does not flash.
    @st.fragment(run_every=timedelta(seconds=settings.dashboard_refresh_seconds))
    def live(state: ViewState) -> None:
        try:
            dashboard.render(state)
        except OperationalError as exc:  # the database went away after the page was up
            database_unreachable(settings, exc.orig or exc)

    live(state)


main()
