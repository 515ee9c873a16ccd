"""What the analyst chose (page, window, symbols, interval) and its shareable URL form.

Pure: parsing never trusts the URL. Unknown values fall back to defaults, symbols must pass
``validate_symbol`` and exist in the database, so nothing from the URL reaches SQL unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from marketpipe.settings import validate_symbol

VIEWS = {
    "overview": "Market overview",
    "instrument": "Instrument",
    "compare": "Compare",
    "health": "Pipeline health",
}
WINDOWS = {
    "1d": ("1 day", timedelta(days=1)),
    "7d": ("7 days", timedelta(days=7)),
    "30d": ("30 days", timedelta(days=30)),
    "90d": ("90 days", timedelta(days=90)),
    "1y": ("1 year", timedelta(days=365)),
}
CUSTOM = "custom"
DAILY = "1day"
DEFAULT_WINDOW = "30d"
DEFAULT_COMPARE_COUNT = 8
# Longer windows use daily bars: thousands of hourly candles or lines are unreadable, and
# fetching them would break the dashboard's 50 ms budget per query.
COMPARE_DAILY_AFTER = timedelta(days=8)
NATIVE_INTERVAL_UP_TO = timedelta(days=31)


@dataclass(frozen=True)
class ViewState:
    view: str = "overview"
    window: str = DEFAULT_WINDOW
    start: date | None = None  # only for the custom window, inclusive
    end: date | None = None
    symbol: str | None = None
    symbols: tuple[str, ...] = field(default_factory=tuple)
    interval: str = ""
    utc: bool = False  # show every time in UTC (default: stocks in their exchange's time)


def _valid_symbols(raw: str, known: Sequence[str]) -> tuple[str, ...]:
    chosen: list[str] = []
    for item in raw.split(","):
        try:
            symbol = validate_symbol(item)
        except ValueError:
            continue
        if symbol in known and symbol not in chosen:
            chosen.append(symbol)
    return tuple(chosen)


def _date(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def parse(params: Mapping[str, str], known: Sequence[str], intervals: Sequence[str]) -> ViewState:
    """The state a URL asks for, with every unusable part replaced by its default."""
    view = params.get("view", "overview")
    window = params.get("window", DEFAULT_WINDOW)
    start, end = _date(params.get("start")), _date(params.get("end"))
    if window == CUSTOM and not (start and end and start <= end):
        window, start, end = DEFAULT_WINDOW, None, None
    if window != CUSTOM:
        start = end = None
    single = _valid_symbols(params.get("symbol", ""), known)
    many = _valid_symbols(params.get("symbols", ""), known)
    interval = params.get("interval", "")
    return ViewState(
        view=view if view in VIEWS else "overview",
        window=window if window in WINDOWS or window == CUSTOM else DEFAULT_WINDOW,
        start=start,
        end=end,
        symbol=single[0] if single else (known[0] if known else None),
        symbols=many or tuple(known[:DEFAULT_COMPARE_COUNT]),
        interval=interval if interval in intervals else (intervals[0] if intervals else ""),
        utc=params.get("utc") == "1",
    )


def to_params(state: ViewState) -> dict[str, str]:
    """The query parameters that reproduce ``state`` (the inverse of :func:`parse`)."""
    params = {"view": state.view, "window": state.window}
    if state.window == CUSTOM and state.start and state.end:
        params |= {"start": state.start.isoformat(), "end": state.end.isoformat()}
    if state.symbol:
        params["symbol"] = state.symbol
    if state.symbols:
        params["symbols"] = ",".join(state.symbols)
    if state.interval:
        params["interval"] = state.interval
    if state.utc:
        params["utc"] = "1"
    return params


def window_bounds(state: ViewState, newest: datetime) -> tuple[datetime, datetime]:
    """[since, until] of the chosen window; preset windows end at the newest stored bar.

    Ending at the newest bar rather than at "now" keeps a stale or demo database readable; the
    health page says how old that bar is.
    """
    if state.window == CUSTOM and state.start and state.end:
        since = datetime.combine(state.start, time(), tzinfo=UTC)
        until = datetime.combine(state.end + timedelta(days=1), time(), tzinfo=UTC)
        return since, until - timedelta(microseconds=1)
    return newest - WINDOWS[state.window][1], newest


def compare_daily(since: datetime, until: datetime) -> bool:
    return until - since > COMPARE_DAILY_AFTER


def intervals_for(state: ViewState, native: str) -> list[str]:
    """The instrument intervals worth drawing over the window: the stored one only if short."""
    since, until = window_bounds(state, datetime(2000, 1, 1, tzinfo=UTC))
    return [native, DAILY] if until - since <= NATIVE_INTERVAL_UP_TO else [DAILY]
