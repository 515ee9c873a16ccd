"""Live prices on the dashboard: the strip, the live candle and the streamer's health.

Reads Redis only (HGETALL / HGET, never a write), through marketpipe.live's contract. The
strip is its own fragment, rerun every STRIP_SECONDS without rerunning the page. The live
candle is drawn from the stored still-open hourly bar extended with the live price: it is a
view, never stored, and named so on the chart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from redis import Redis
from sqlalchemy import text
from sqlalchemy.engine import Engine

from marketpipe.live import LATEST_KEY, STATUS_KEY, STATUS_STALE_SECONDS, LatestTick, badge
from services.dashboard import theme

# The strip's refresh: with the streamer's ~10 ms tick -> Redis, a 1 s period keeps the median
# tick -> screen latency near half a second (bench/bench_stream.py measures it).
STRIP_SECONDS = 1.0
BADGE_ICONS = {"live": "🟢 live", "delayed": "🟠 delayed", "off": "⚪ off"}

# The day change's reference, defined once in latest_quotes (db/init/0007): the previous
# session's close for stocks, the close 24 hours before the latest bar for crypto and forex.
PREVIOUS_CLOSE_SQL = text(
    "SELECT q.symbol, q.reference_close AS close FROM marketpipe.latest_quotes q"
    " WHERE q.symbol = ANY(:symbols) AND q.interval = :interval"
    " AND q.reference_close IS NOT NULL"
)


def connect(redis_url: str) -> Redis:
    # Short timeouts: an unreachable Redis must degrade the strip, not hang the page.
    return Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)


@dataclass(frozen=True)
class StreamerStatus:
    state: str
    connected: bool
    subscribed: tuple[str, ...]
    failed: dict[str, str]
    ticks_per_minute: int
    last_error: str
    counters: dict[str, int]
    age_seconds: float | None


def read_status(redis: Redis, now: float) -> StreamerStatus:
    """The streamer's published status; "off" when it never published or stopped publishing."""
    stored: dict[bytes, bytes] = redis.hgetall(STATUS_KEY)  # type: ignore[assignment]
    raw = {k.decode(): v.decode() for k, v in stored.items()}
    if not raw:
        return StreamerStatus("off", False, (), {}, 0, "", {}, None)
    age = now - float(raw.get("updated_at") or 0)
    state = raw.get("state", "unknown") if age <= STATUS_STALE_SECONDS else "off (no status)"
    return StreamerStatus(
        state=state,
        connected=state == "subscribed",
        subscribed=tuple(json.loads(raw.get("subscribed") or "[]")),
        failed=dict(json.loads(raw.get("failed") or "{}")),
        ticks_per_minute=int(raw.get("ticks_per_minute") or 0),
        last_error=raw.get("last_error", ""),
        counters=dict(json.loads(raw.get("counters") or "{}")),
        age_seconds=age,
    )


def read_latest(redis: Redis, symbols: Sequence[str]) -> dict[str, LatestTick]:
    if not symbols:
        return {}
    values = redis.hmget(LATEST_KEY, list(symbols))
    return {s: LatestTick.from_json(v) for s, v in zip(symbols, values, strict=True) if v}


def strip_frame(
    symbols: Sequence[str],
    latest: dict[str, LatestTick],
    previous_close: dict[str, float],
    status: StreamerStatus,
    now: float,
) -> pd.DataFrame:
    """One row per symbol: price, change vs previous close, tick age and badge (pure)."""
    rows = []
    for symbol in symbols:
        tick = latest.get(symbol)
        age = None if tick is None else max(0.0, now - tick.timestamp)
        reference = previous_close.get(symbol)
        change = None
        if tick is not None and reference:
            change = 100.0 * (tick.price / reference - 1.0)
        rows.append(
            {
                "symbol": symbol,
                "price": None if tick is None else tick.price,
                "previous_close": reference,
                "change_pct": change,
                "tick_time": None if tick is None else datetime.fromtimestamp(tick.timestamp, UTC),
                "tick_age_seconds": age,
                "badge": badge(age, status.connected),
            }
        )
    return pd.DataFrame(rows)


@st.cache_data(ttl=60, show_spinner=False, hash_funcs={Engine: lambda e: e.url.render_as_string()})
def previous_closes(engine: Engine, symbols: tuple[str, ...], interval: str) -> dict[str, float]:
    """Each symbol's day-change reference (latest_quotes.reference_close of ``interval``)."""
    with engine.connect() as conn:
        rows = conn.execute(PREVIOUS_CLOSE_SQL, {"symbols": list(symbols), "interval": interval})
        return {row.symbol: float(row.close) for row in rows}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "no tick"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def render_strip(
    redis_url: str, engine: Engine, symbols: Sequence[str], interval: str = "1h"
) -> None:
    """The live strip, as a fragment of its own (rerun every STRIP_SECONDS)."""

    @st.fragment(run_every=timedelta(seconds=STRIP_SECONDS))
    def strip() -> None:
        now = datetime.now(UTC)
        try:
            redis = connect(redis_url)
            status = read_status(redis, now.timestamp())
            latest = read_latest(redis, symbols)
        except Exception as exc:  # a Redis failure is shown, never a crash
            st.caption(f"Live prices unavailable: Redis did not answer ({type(exc).__name__}).")
            return
        if status.age_seconds is None and not latest:
            # No streamer ever ran here: one line, not a card of dashes per symbol.
            st.caption("Live prices off: no streamer has published (services.streamer).")
            return
        try:
            closes = previous_closes(engine, tuple(symbols), interval)
        except Exception:
            closes = {}
        frame = strip_frame(symbols, latest, closes, status, now.timestamp())
        columns = st.columns(min(len(frame), 6) or 1)
        for index, row in enumerate(frame.to_dict("records")):
            with columns[index % len(columns)]:
                change = None if pd.isna(row["change_pct"]) else f"{row['change_pct']:+.2f}%"
                st.metric(
                    f"{row['symbol']} · {BADGE_ICONS[row['badge']]}",
                    theme.MISSING if pd.isna(row["price"]) else f"{row['price']:,.2f}",
                    change,
                    delta_description="vs previous close (stocks) / 24 h (crypto)",
                    help="Live price from the streamer (not a stored bar).",
                )
                st.caption(f"tick {_age(row['tick_age_seconds'])}")

    strip()


def extend_open_bar(
    bars: pd.DataFrame, tick: LatestTick | None, bar_length: timedelta
) -> pd.DataFrame:
    """The still-open last bar with the live price folded in (one row), or an empty frame.

    Only when the last stored bar is still open and the tick falls inside it: the result is a
    view for the chart, never a stored bar.
    """
    if tick is None or bars.empty or bool(bars["is_complete"].iloc[-1]):
        return bars.iloc[0:0]
    last = bars.iloc[-1]
    start = pd.Timestamp(last["bar_time"])
    at = pd.Timestamp(tick.timestamp, unit="s", tz="UTC")
    if not start <= at < start + bar_length:
        return bars.iloc[0:0]
    row = last.copy()
    row["high"] = max(float(last["high"]), tick.price)
    row["low"] = min(float(last["low"]), tick.price)
    row["close"] = tick.price
    return pd.DataFrame([row])


def with_live_candle(figure: go.Figure, live_bar: pd.DataFrame) -> go.Figure:
    """Draw the live-extended open candle over the stored one, named "live (not stored)"."""
    if live_bar.empty:
        return figure
    colour = {"line": {"color": theme.LIVE}, "fillcolor": theme.LIVE}
    figure.add_trace(
        go.Candlestick(
            x=live_bar["bar_time"],
            open=live_bar["open"],
            high=live_bar["high"],
            low=live_bar["low"],
            close=live_bar["close"],
            name="live (not stored)",
            increasing=colour,
            decreasing=colour,
        ),
        row=1,
        col=1,
    )
    return figure


def live_tick(redis_url: str, symbol: str) -> LatestTick | None:
    """The symbol's newest tick, or None when Redis has none or does not answer."""
    try:
        return read_latest(connect(redis_url), [symbol]).get(symbol)
    except Exception:
        return None


def render_health(redis_url: str) -> None:
    """Pipeline health: the streamer's connection state, symbols, ticks per minute, last error."""
    st.subheader("Live prices (streamer)")
    try:
        status = read_status(connect(redis_url), datetime.now(UTC).timestamp())
    except Exception as exc:
        st.error(f"Redis did not answer: {type(exc).__name__}")
        return
    if status.age_seconds is None:
        st.info("No streamer has published a status: live prices are off.")
        return
    line = (
        f"Connection: **{status.state}** · {len(status.subscribed)} symbol(s) subscribed ·"
        f" {status.ticks_per_minute} ticks/min · status {status.age_seconds:.0f} s old"
    )
    (st.success if status.connected else st.warning)(line)
    st.caption("Subscribed: " + (", ".join(status.subscribed) or "none"))
    if status.failed:
        st.dataframe(
            pd.DataFrame({"symbol": list(status.failed), "reason": list(status.failed.values())}),
            placeholder=theme.MISSING,
            hide_index=True,
        )
    st.caption(f"Last error: {status.last_error or 'none'}")
    counters = pd.DataFrame(
        {"counter": list(status.counters), "value": list(status.counters.values())}
    )
    st.dataframe(counters, placeholder=theme.MISSING, hide_index=True)
