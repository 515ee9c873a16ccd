"""What the analyst chose (page, horizon, symbols, interval, overlays, scale, benchmark) and its
shareable URL form.

Pure: parsing never trusts the URL. Unknown values fall back to defaults, symbols must pass
``validate_symbol`` and exist in the database, so nothing from the URL reaches SQL unchecked;
symbols the URL names but the database does not hold are kept in ``unknown`` so the page can
say so instead of silently showing another one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from marketpipe.market import CALENDAR_INTERVALS, INTRADAY_MINUTES
from marketpipe.settings import validate_symbol

VIEWS = {
    "overview": "Market overview",
    "instrument": "Instrument",
    "compare": "Compare",
    "health": "Pipeline health",
}
# Horizon buttons (key -> label, calendar length). 5D is a week: five sessions of a stock, seven
# days of crypto. YTD and Max have no fixed length: window_bounds computes them.
WINDOWS: dict[str, tuple[str, timedelta | None]] = {
    "1d": ("1D", timedelta(days=1)),
    "5d": ("5D", timedelta(days=7)),
    "1m": ("1M", timedelta(days=30)),
    "3m": ("3M", timedelta(days=91)),
    "6m": ("6M", timedelta(days=182)),
    "ytd": ("YTD", None),
    "1y": ("1Y", timedelta(days=365)),
    "5y": ("5Y", timedelta(days=5 * 365 + 1)),
    "max": ("Max", None),
}
# Links shared before the horizon buttons keep working.
WINDOW_ALIASES = {"7d": "5d", "30d": "1m", "90d": "3m"}
CUSTOM = "custom"
DAILY = "1day"
DEFAULT_WINDOW = "1m"
DEFAULT_COMPARE_COUNT = 8
PEER_AVERAGE = "peers"  # the relative view's benchmark: the average of the other symbols
# Longer windows use daily bars: thousands of hourly candles or lines are unreadable, and
# fetching them would break the dashboard's 50 ms budget per query.
COMPARE_DAILY_AFTER = timedelta(days=8)
# Beyond two years Compare steps by weeks: five years of eight symbols' days are 14,600 rows,
# and weekly returns are what a multi-year comparison reads anyway.
COMPARE_WEEKLY_AFTER = timedelta(days=2 * 365)
NATIVE_INTERVAL_UP_TO = timedelta(days=31)
DEFAULT_OVERLAYS = ("SMA 20", "SMA 50")


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
    overlays: tuple[str, ...] = DEFAULT_OVERLAYS
    log_scale: bool = False
    relative: str = ""  # "" (rebased), PEER_AVERAGE, or a benchmark symbol
    unknown: tuple[str, ...] = ()  # symbols the URL named that the database does not hold


def label(window: str) -> str:
    return WINDOWS[window][0] if window in WINDOWS else "Custom"


def _split_symbols(raw: str, known: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(known symbols in URL order, unknown ones) of a comma-separated URL value."""
    chosen: list[str] = []
    unknown: list[str] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        try:
            symbol = validate_symbol(item)
        except ValueError:
            # Not even a symbol's shape: reported as typed, but only its printable part.
            unknown.append("".join(c for c in item.strip() if c.isprintable())[:24])
            continue
        target = chosen if symbol in known else unknown
        if symbol not in target:
            target.append(symbol)
    return tuple(chosen), tuple(unknown)


def _date(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def parse(
    params: Mapping[str, str],
    known: Sequence[str],
    intervals: Sequence[str],
    overlays: Sequence[str] = DEFAULT_OVERLAYS,
) -> ViewState:
    """The state a URL asks for, with every unusable part replaced by its default.

    ``overlays``: every overlay label there is (the URL may only choose among them).
    """
    view = params.get("view", "overview")
    window = params.get("window", DEFAULT_WINDOW)
    window = WINDOW_ALIASES.get(window, window)
    start, end = _date(params.get("start")), _date(params.get("end"))
    if window == CUSTOM and not (start and end and start <= end):
        window, start, end = DEFAULT_WINDOW, None, None
    if window != CUSTOM:
        start = end = None
    single, single_unknown = _split_symbols(params.get("symbol", ""), known)
    many, many_unknown = _split_symbols(params.get("symbols", ""), known)
    interval = params.get("interval", "")
    chosen_overlays: tuple[str, ...] = DEFAULT_OVERLAYS
    if "overlays" in params:
        wanted = params["overlays"].split(",")
        chosen_overlays = tuple(o for o in overlays if o in wanted)
    relative = params.get("relative", "")
    if relative != PEER_AVERAGE:
        benchmark = _split_symbols(relative, known)[0]
        relative = benchmark[0] if benchmark else ""
    unknown = tuple(dict.fromkeys((*single_unknown, *many_unknown)))
    return ViewState(
        view=view if view in VIEWS else "overview",
        window=window if window in WINDOWS or window == CUSTOM else DEFAULT_WINDOW,
        start=start,
        end=end,
        symbol=single[0] if single else (known[0] if known else None),
        symbols=many or tuple(known[:DEFAULT_COMPARE_COUNT]),
        interval=interval if interval in intervals else (intervals[0] if intervals else ""),
        utc=params.get("utc") == "1",
        overlays=chosen_overlays,
        log_scale=params.get("log") == "1",
        relative=relative,
        unknown=unknown,
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
    if state.overlays != DEFAULT_OVERLAYS:
        params["overlays"] = ",".join(state.overlays)
    if state.log_scale:
        params["log"] = "1"
    if state.relative:
        params["relative"] = state.relative
    return params


def window_bounds(
    state: ViewState, newest: datetime, oldest: datetime | None = None
) -> tuple[datetime, datetime]:
    """[since, until] of the chosen window; preset windows end at the newest stored bar.

    Ending at the newest bar rather than at "now" keeps a stale or demo database readable; the
    health page says how old that bar is. ``oldest`` (the first stored bar) bounds "Max".
    """
    if state.window == CUSTOM and state.start and state.end:
        since = datetime.combine(state.start, time(), tzinfo=UTC)
        until = datetime.combine(state.end + timedelta(days=1), time(), tzinfo=UTC)
        return since, until - timedelta(microseconds=1)
    if state.window == "ytd":
        # The reference is the last close of the previous year: the year's first instant.
        return datetime(newest.year, 1, 1, tzinfo=UTC), newest
    if state.window == "max":
        first = oldest if oldest is not None else newest - timedelta(days=365)
        return min(first, newest - timedelta(days=1)), newest
    length = WINDOWS.get(state.window, WINDOWS[DEFAULT_WINDOW])[1]
    assert length is not None
    return newest - length, newest


def compare_daily(since: datetime, until: datetime) -> bool:
    return until - since > COMPARE_DAILY_AFTER


def compare_weekly(since: datetime, until: datetime) -> bool:
    return until - since > COMPARE_WEEKLY_AFTER


def intervals_for(since: datetime, until: datetime, stored: Sequence[str]) -> list[str]:
    """The instrument intervals worth drawing over [since, until]: the stored intraday ones
    (shortest first) only if short, then daily bars (the API's, else aggregated), then the
    stored weekly and monthly ones."""
    intraday = sorted(
        (i for i in stored if i in INTRADAY_MINUTES), key=INTRADAY_MINUTES.__getitem__
    )
    longer = [i for i in CALENDAR_INTERVALS if i in stored and i != DAILY]
    short = until - since <= NATIVE_INTERVAL_UP_TO
    return [*(intraday if short else []), DAILY, *longer]
