"""marketpipe dashboard: prices, comparisons and pipeline health (read-only role)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st
from sqlalchemy.engine import Engine

from marketpipe.db import reader_engine
from marketpipe.settings import Settings, load_settings
from services.dashboard import charts, queries

WINDOWS = {
    "1 day": timedelta(days=1),
    "7 days": timedelta(days=7),
    "30 days": timedelta(days=30),
    "90 days": timedelta(days=90),
    "1 year": timedelta(days=365),
}


@st.cache_resource
def _settings() -> Settings:
    return load_settings()


@st.cache_resource
def _engine() -> Engine:
    return reader_engine(_settings())


def main() -> None:
    settings = _settings()
    st.set_page_config(page_title="marketpipe", layout="wide")
    st.title("marketpipe")
    # Cached results never outlive one refresh interval, so every refresh shows fresh data.
    cached = st.cache_data(
        ttl=settings.dashboard_refresh_seconds,
        hash_funcs={Engine: lambda engine: engine.url.render_as_string()},
    )
    symbols_q = cached(queries.symbols)
    history_q = cached(queries.history)
    closes_q = cached(queries.closes)
    runs_q = cached(queries.recent_runs)
    sources_q = cached(queries.data_sources)

    @st.fragment(run_every=timedelta(seconds=settings.dashboard_refresh_seconds))
    def live() -> None:
        engine = _engine()
        sources = sources_q(engine)
        if settings.demo_mode or (not sources.empty and "demo" in set(sources["source"])):
            st.warning(
                "DEMO DATA: these prices are synthetic, served by the marketpipe sandbox."
                " Set TWELVE_DATA_API_KEY to load real market data.",
                icon="⚠️",
            )
        available = symbols_q(engine, settings.interval)
        if available.empty:
            st.info(
                "No data yet. Start the pipeline (`make run`, or `docker compose up`) and the"
                " fetcher loads the configured symbols within a minute."
            )
            return
        names = available["symbol"].tolist()
        # Windows end at the newest stored bar, so stale data is still shown (and flagged).
        newest = available["last_bar"].max().to_pydatetime()
        since = newest - WINDOWS[st.session_state.get("window", "30 days")]
        price_tab, compare_tab, health_tab = st.tabs(["Price", "Compare", "Pipeline health"])
        with price_tab:
            symbol = st.session_state.get("symbol") or names[0]
            if symbol not in names:
                symbol = names[0]
            history = history_q(engine, symbol, settings.interval, since)
            if history.empty:
                st.info(f"No {symbol} bars in this window; pick a longer one.")
            else:
                st.plotly_chart(charts.price_figure(history, symbol), key="price_chart")
                last = history.iloc[-1]
                st.metric(
                    f"{symbol} last close",
                    f"{last['close']:,.2f}",
                    f"{last['pct_change']:+.2f}%"
                    if last["pct_change"] == last["pct_change"]
                    else None,
                )
        with compare_tab:
            chosen = st.session_state.get("compare") or names
            closes = closes_q(engine, [s for s in chosen if s in names], settings.interval, since)
            if closes.empty:
                st.info("Pick at least one symbol with data in this window.")
            else:
                st.plotly_chart(charts.comparison_figure(closes), key="compare_chart")
        with health_tab:
            st.dataframe(available, hide_index=True)
            st.dataframe(runs_q(engine), hide_index=True)
        st.caption(
            f"Last updated {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC;"
            f" refreshes every {settings.dashboard_refresh_seconds} s."
        )

    with st.sidebar:
        st.selectbox("Window", list(WINDOWS), index=2, key="window")
        known = symbols_q(_engine(), settings.interval)["symbol"].tolist()
        if known:
            st.selectbox("Symbol", known, key="symbol")
            st.multiselect("Compare", known, default=known, key="compare")
    live()


main()
