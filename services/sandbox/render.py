"""Pure formatting of model bars into Twelve Data's exact JSON and CSV text.

Bodies are compact JSON with the real API's key order; every OHLCV value is a string. Without
``dp`` the decimals are "ragged" as the real API's are: stock prices are float32 cents printed
with six decimals and trailing zeros cut ("235.029999", "237"), other prices are their ticks
with trailing zeros cut ("73027.02", "79500").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from zoneinfo import ZoneInfo

import numpy as np

from marketpipe.market import CALENDAR_INTERVALS
from services.sandbox.calendar import utc_offsets
from services.sandbox.market import BarSeries, Instrument

BAR_FIELDS = ("datetime", "open", "high", "low", "close", "volume")


def dumps(value: object) -> str:
    """Compact JSON as the real API sends it, non-ASCII kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def time_series_meta(instrument: Instrument, interval: str) -> dict[str, str]:
    """The ``meta`` object of /time_series in the real API's key order per asset class."""
    meta = {"symbol": instrument.symbol, "interval": interval}
    if instrument.asset_class == "stock":
        meta |= {
            "currency": instrument.currency,
            "exchange_timezone": instrument.exchange_timezone,
            "exchange": instrument.exchange,
            "mic_code": instrument.mic_code,
            "type": instrument.instrument_type,
        }
    elif instrument.asset_class == "crypto":
        meta |= {
            "currency_base": instrument.currency_base,
            "currency_quote": instrument.currency_quote,
            "exchange": instrument.exchange,
            "type": instrument.instrument_type,
        }
    else:
        meta |= {
            "currency_base": instrument.currency_base,
            "currency_quote": instrument.currency_quote,
            "type": instrument.instrument_type,
        }
    return meta


def _ragged(decimals: int) -> Callable[[float], str]:
    template = f"{{:.{decimals}f}}"

    def render(value: float) -> str:
        text = template.format(value)
        return text.rstrip("0").rstrip(".") if "." in text else text

    return render


def price_formatter(instrument: Instrument, dp: int | None) -> Callable[[float], str]:
    """How one price is printed: fixed ``dp`` decimals, or the API's ragged default."""
    if dp is not None:
        return f"{{:.{dp}f}}".format
    if instrument.asset_class == "stock":
        return _ragged(6)
    return _ragged(instrument.price_decimals)


def format_prices(values: np.ndarray, formatter: Callable[[float], str]) -> list[str]:
    return list(map(formatter, values.tolist()))


def bar_labels(bars: BarSeries, timezone: str | None) -> list[str]:
    """Each bar's datetime text: its open time as naive wall time in the answer's time zone.

    ``timezone`` None means the exchange's own; daily and longer bars are plain dates.
    """
    if bars.interval in CALENDAR_INTERVALS:
        days: list[str] = np.datetime_as_string(bars.label_day.astype("datetime64[D]")).tolist()
        return days
    zone = ZoneInfo(timezone or bars.instrument.exchange_timezone)
    local = bars.open_time + utc_offsets(bars.open_time, zone)
    texts = np.datetime_as_string(local.astype("datetime64[s]"), unit="s")
    return [text.replace("T", " ") for text in texts.tolist()]


def bar_rows(
    bars: BarSeries,
    *,
    dp: int | None,
    timezone: str | None,
    previous_close: np.ndarray | None = None,
) -> list[list[str]]:
    """Each bar as its list of string values in field order (oldest first)."""
    fmt = price_formatter(bars.instrument, dp)
    columns = [
        bar_labels(bars, timezone),
        format_prices(bars.open, fmt),
        format_prices(bars.high, fmt),
        format_prices(bars.low, fmt),
        format_prices(bars.close, fmt),
    ]
    if bars.volume is not None:
        columns.append([str(v) for v in bars.volume.tolist()])
    if previous_close is not None:
        columns.append(format_prices(previous_close, fmt))
    return [list(row) for row in zip(*columns, strict=True)]


def field_names(bars: BarSeries, with_previous_close: bool) -> list[str]:
    names = list(BAR_FIELDS if bars.volume is not None else BAR_FIELDS[:-1])
    if with_previous_close:
        names.append("previous_close")
    return names


def rows_to_json_objects(names: list[str], rows: list[list[str]]) -> list[str]:
    """Each row as a compact JSON object text, keys in ``names`` order."""
    # Values are digits, '.', '-', ' ' and ':' only, so no JSON escaping is needed.
    prefixes = ['{"' + names[0] + '":"'] + ['","' + name + '":"' for name in names[1:]]
    if len(names) == 6:
        p0, p1, p2, p3, p4, p5 = prefixes
        return [f'{p0}{a}{p1}{b}{p2}{c}{p3}{d}{p4}{e}{p5}{f}"}}' for a, b, c, d, e, f in rows]
    if len(names) == 5:
        p0, p1, p2, p3, p4 = prefixes
        return [f'{p0}{a}{p1}{b}{p2}{c}{p3}{d}{p4}{e}"}}' for a, b, c, d, e in rows]
    return ["".join(p + v for p, v in zip(prefixes, row, strict=True)) + '"}' for row in rows]


def time_series_json(meta: dict[str, str], value_objects: list[str]) -> str:
    """The full single-symbol body: meta, values, status."""
    return '{"meta":' + dumps(meta) + ',"values":[' + ",".join(value_objects) + '],"status":"ok"}'


def csv_text(names: list[str], rows: list[list[str]]) -> str:
    """Semicolon-delimited with a header row, as the real API's format=CSV."""
    lines = [";".join(names), *(";".join(row) for row in rows)]
    return "\n".join(lines) + "\n"


def error_json(code: int, message: str, meta: dict[str, str] | None = None) -> str:
    body: dict[str, object] = {"code": code, "message": message, "status": "error"}
    if meta is not None:
        body["meta"] = meta
    return dumps(body)
