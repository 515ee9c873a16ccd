"""Tick validation: one stream frame in, an accepted :class:`Tick` or a drop reason out (pure).

A frame is dropped, with its reason counted, when it is not JSON or not a well-formed price
event (``malformed``), names a symbol we did not subscribe to (``unknown_symbol``), is dated
more than FUTURE_TOLERANCE_SECONDS ahead of our clock (``future``, a known quirk of the real
stream) or is older than the symbol's previous accepted tick (``out_of_order``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from marketpipe.live import FUTURE_TOLERANCE_SECONDS

DropReason = Literal["malformed", "unknown_symbol", "future", "out_of_order"]
DROP_REASONS: tuple[DropReason, ...] = ("malformed", "unknown_symbol", "future", "out_of_order")


@dataclass(frozen=True)
class Tick:
    symbol: str
    timestamp: int  # epoch seconds, as the stream dates the tick
    price: float
    day_volume: float | None


@dataclass(frozen=True)
class Drop:
    reason: DropReason
    detail: str


@dataclass(frozen=True)
class Control:
    """A non-price event (subscribe-status, heartbeat, ...), handed to the connection."""

    event: str
    body: Mapping[str, Any]


def parse_frame(raw: str | bytes) -> Mapping[str, Any] | Drop:
    """The frame's JSON object, or a ``malformed`` drop."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return Drop("malformed", "not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("event"), str):
        return Drop("malformed", "not an event object")
    return body


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def classify(
    raw: str | bytes,
    known: Collection[str],
    last_timestamp: Mapping[str, int],
    now: float,
) -> Tick | Drop | Control:
    """Validate one frame against the subscribed symbols, each's last tick time and ``now``."""
    body = parse_frame(raw)
    if isinstance(body, Drop):
        return body
    if body["event"] != "price":
        return Control(body["event"], body)
    symbol = body.get("symbol")
    price = _number(body.get("price"))
    timestamp = _number(body.get("timestamp"))
    if not isinstance(symbol, str) or not symbol:
        return Drop("malformed", "price event without a symbol")
    if price is None or price <= 0:
        return Drop("malformed", f"{symbol}: price {body.get('price')!r} is not a positive number")
    if timestamp is None or timestamp <= 0:
        return Drop("malformed", f"{symbol}: timestamp {body.get('timestamp')!r} is not a time")
    volume = body.get("day_volume")
    day_volume = None if volume is None else _number(volume)
    if volume is not None and (day_volume is None or day_volume < 0):
        return Drop("malformed", f"{symbol}: day_volume {volume!r} is not a volume")
    if symbol not in known:
        return Drop("unknown_symbol", f"{symbol} is not subscribed")
    seconds = int(timestamp)
    if seconds > now + FUTURE_TOLERANCE_SECONDS:
        return Drop("future", f"{symbol}: dated {seconds - now:.0f} s ahead")
    previous = last_timestamp.get(symbol)
    if previous is not None and seconds < previous:
        return Drop("out_of_order", f"{symbol}: {seconds} after {previous}")
    return Tick(symbol, seconds, price, day_volume)
