"""The deterministic synthetic market: instruments and their OHLCV bars for any window.

Pure functions only: the same symbol, interval, window and ``now`` always give the same bars.

How a price path is built, cheaply enough to evaluate any window without history loops:

* **Daily closes** are a mean-reverting walk in log price around the instrument's level. The walk
  is drawn per 32-day block (an AR(1) over block ends, cached per symbol: a few hundred numbers);
  the days inside a block are hashed Gaussian steps conditioned to hit the block's end. So a
  window only needs the blocks it touches.
* **Inside a session** the log price is a Brownian bridge from the session open (the previous
  close plus an overnight gap, none for crypto) to the session close, sampled at whole minutes by
  Levy midpoint refinement: the value at a minute is found by ~11 bisection steps whose noise is
  a hash of (symbol, session, node), so any minute is evaluated directly.
* **Dependence**: every Gaussian draw of the daily walk, the overnight gap and the intraday
  bridge is a weighted sum of the instrument's own draw and its factors' draws (same salt and
  keys, the factor's seed): a market factor per asset class (stocks, crypto, the US dollar for
  forex), plus a sector for stocks. The weights' squares sum to one, so each instrument's
  volatility is unchanged while pairs co-move: two tech stocks about 0.55, a tech stock and a
  bank 0.35, BTC/ETH 0.75, EUR/USD and USD/JPY -0.5 (``factor_loadings``).
* A bar's open and close are the path at its edges (the incomplete newest bar closes at "now",
  interpolated between minutes), so closes agree across intervals at the same instant. High and
  low are drawn from the exact distribution of a Brownian bridge's extremes between those two
  values; volume (stocks only) follows a U-shaped intraday profile of a hashed daily volume.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np

from marketpipe.market import (
    CALENDAR_INTERVALS,
    INTRADAY_MINUTES,
    AssetClass,
    regular_session_minutes,
)
from services.sandbox.calendar import CalendarName, SessionTable, session_table

INTERVALS: tuple[str, ...] = (*INTRADAY_MINUTES, *CALENDAR_INTERVALS)

SYNTHETIC_PREFIX = "SYN"
SYNTHETIC_COUNT = 5000


@dataclass(frozen=True)
class Instrument:
    """Reference attributes (as Twelve Data's reference endpoints give them) and model knobs."""

    symbol: str
    name: str
    asset_class: AssetClass
    price_level: float
    daily_volatility: float
    average_daily_volume: int = 0
    exchange: str = ""
    mic_code: str = ""
    currency: str = ""
    country: str = ""
    instrument_type: str = "Common Stock"
    currency_base: str = ""
    currency_quote: str = ""
    figi_code: str = ""
    isin: str = ""
    cusip: str = ""
    available_exchanges: tuple[str, ...] = ()
    price_decimals: int = 2
    currency_group: str = ""
    seed: int = field(default=0, compare=False)

    @property
    def calendar(self) -> CalendarName:
        return {"stock": "XNYS", "crypto": "CRYPTO", "forex": "FOREX"}[self.asset_class]  # type: ignore[return-value]

    @property
    def exchange_timezone(self) -> str:
        return "America/New_York" if self.asset_class == "stock" else "UTC"

    @property
    def has_volume(self) -> bool:
        return self.asset_class == "stock"


def _stock(
    symbol: str,
    name: str,
    level: float,
    volatility: float,
    volume: int,
    exchange: str,
    figi: str,
    isin: str,
    cusip: str,
) -> Instrument:
    return Instrument(
        symbol=symbol,
        name=name,
        asset_class="stock",
        price_level=level,
        daily_volatility=volatility,
        average_daily_volume=volume,
        exchange=exchange,
        mic_code="XNGS" if exchange == "NASDAQ" else "XNYS",
        currency="USD",
        country="United States",
        figi_code=figi,
        isin=isin,
        cusip=cusip,
    )


def _crypto(symbol: str, base: str, level: float, volatility: float) -> Instrument:
    return Instrument(
        symbol=symbol,
        name=f"{base} US Dollar",
        asset_class="crypto",
        price_level=level,
        daily_volatility=volatility,
        exchange="Binance",
        instrument_type="Digital Currency",
        currency_base=base,
        currency_quote="US Dollar",
        available_exchanges=("Binance", "Coinbase Pro"),
    )


def _forex(
    symbol: str, base: str, quote: str, level: float, volatility: float, decimals: int
) -> Instrument:
    return Instrument(
        symbol=symbol,
        name=f"{base} {quote}",
        asset_class="forex",
        price_level=level,
        daily_volatility=volatility,
        instrument_type="Physical Currency",
        currency_base=base,
        currency_quote=quote,
        price_decimals=decimals,
        currency_group="Major",
    )


_NAMED_INSTRUMENTS: tuple[Instrument, ...] = (
    _stock("AAPL", "Apple Inc", 260.0, 0.017, 50_000_000, "NASDAQ",
           "BBG000B9Y5X2", "US0378331005", "037833100"),
    _stock("MSFT", "Microsoft Corp", 480.0, 0.015, 20_000_000, "NASDAQ",
           "BBG000BPH459", "US5949181045", "594918104"),
    _stock("NVDA", "NVIDIA Corp", 180.0, 0.030, 180_000_000, "NASDAQ",
           "BBG000BBJQV0", "US67066G1040", "67066G104"),
    _stock("AMZN", "Amazon.com Inc", 230.0, 0.020, 40_000_000, "NASDAQ",
           "BBG000BVPV84", "US0231351067", "023135106"),
    _stock("GOOGL", "Alphabet Inc", 250.0, 0.018, 30_000_000, "NASDAQ",
           "BBG009S39JX6", "US02079K3059", "02079K305"),
    _stock("META", "Meta Platforms Inc", 700.0, 0.024, 12_000_000, "NASDAQ",
           "BBG000MM2P62", "US30303M1027", "30303M102"),
    _stock("TSLA", "Tesla Inc", 400.0, 0.035, 90_000_000, "NASDAQ",
           "BBG000N9MNX3", "US88160R1014", "88160R101"),
    _stock("JPM", "JPMorgan Chase & Co", 300.0, 0.014, 9_000_000, "NYSE",
           "BBG000DMBXR2", "US46625H1005", "46625H100"),
    _crypto("BTC/USD", "Bitcoin", 90_000.0, 0.030),
    _crypto("ETH/USD", "Ethereum", 3_200.0, 0.040),
    _crypto("SOL/USD", "Solana", 150.0, 0.050),
    _forex("EUR/USD", "Euro", "US Dollar", 1.16, 0.005, 5),
    _forex("GBP/USD", "British Pound", "US Dollar", 1.34, 0.005, 5),
    _forex("USD/JPY", "US Dollar", "Japanese Yen", 150.0, 0.006, 3),
)  # fmt: skip


def symbol_seed(symbol: str) -> int:
    """Stable 63-bit seed of a symbol (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(symbol.encode(), digest_size=8, person=b"mp-sandbox").digest()
    return int.from_bytes(digest, "little") >> 1


def _with_seed(instrument: Instrument) -> Instrument:
    return Instrument(**{**instrument.__dict__, "seed": symbol_seed(instrument.symbol)})


NAMED_INSTRUMENTS: dict[str, Instrument] = {i.symbol: _with_seed(i) for i in _NAMED_INSTRUMENTS}


def synthetic_symbols() -> list[str]:
    return [f"{SYNTHETIC_PREFIX}{n:04d}" for n in range(1, SYNTHETIC_COUNT + 1)]


def _synthetic(symbol: str, number: int) -> Instrument:
    seed = symbol_seed(symbol)
    unit = [((seed >> shift) & 0xFFFF) / 0xFFFF for shift in (0, 16, 32)]
    exchange = "NASDAQ" if number % 2 else "NYSE"
    return Instrument(
        symbol=symbol,
        name=f"Synthetic Industries {number:04d} Inc",
        asset_class="stock",
        price_level=round(5.0 * 100.0 ** unit[0], 2),  # log-uniform 5..500 USD
        daily_volatility=0.01 + 0.03 * unit[1],
        average_daily_volume=int(500_000 + 29_500_000 * unit[2]),
        exchange=exchange,
        mic_code="XNGS" if exchange == "NASDAQ" else "XNYS",
        currency="USD",
        country="United States",
        figi_code=f"BBGSYN{number:06d}",
        isin=f"XS00SYN{number:05d}",
        cusip=f"SYN{number:06d}",
        seed=seed,
    )


@lru_cache(maxsize=8192)
def get_instrument(symbol: str) -> Instrument | None:
    """The instrument for a canonical symbol (``AAPL``, ``BTC/USD``, ``SYN0042``) or None."""
    if symbol in NAMED_INSTRUMENTS:
        return NAMED_INSTRUMENTS[symbol]
    number_text = symbol.removeprefix(SYNTHETIC_PREFIX)
    if symbol.startswith(SYNTHETIC_PREFIX) and len(number_text) == 4 and number_text.isdigit():
        number = int(number_text)
        if 1 <= number <= SYNTHETIC_COUNT:
            return _synthetic(symbol, number)
    return None


def all_instruments() -> list[Instrument]:
    """Named instruments first, then the synthetic universe."""
    synthetic = [get_instrument(s) for s in synthetic_symbols()]
    return [*NAMED_INSTRUMENTS.values(), *(i for i in synthetic if i is not None)]


# --- hashing: counter-based randomness so any point of the path is evaluated directly --------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32, _S11 = (np.uint64(n) for n in (30, 27, 31, 32, 11))
_LOW32 = np.uint64(0xFFFFFFFF)

SALT_BLOCK, SALT_DAY, SALT_GAP, SALT_BRIDGE, SALT_HIGH, SALT_LOW, SALT_DAYVOL, SALT_BARVOL = range(
    1, 9
)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    mixed: np.ndarray = x ^ (x >> _S31)
    return mixed


def _hash(seed: int, salt: int, *keys: np.ndarray | int) -> np.ndarray:
    arrays = [np.atleast_1d(np.asarray(k, dtype=np.int64)).astype(np.uint64) for k in keys]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    state = np.full(shape, np.uint64((seed * 16 + salt) & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    for key in arrays:
        state = _mix(state ^ _mix(key))
    return state


# --- dependence: a market factor per asset class, and sectors -----------------------------------

# Share of an instrument's variance from its asset class's common factor, and from its sector.
MARKET_SHARE: dict[str, float] = {"stock": 0.35, "crypto": 0.75, "forex": 0.5}
SECTOR_SHARE = 0.2
SECTORS: dict[str, str] = {
    **{s: "technology" for s in ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA")},
    "JPM": "financials",
}
SYNTHETIC_SECTORS = 5
# A pair quoted the other way round moves against the dollar factor.
AGAINST_THE_FACTOR = frozenset({"USD/JPY"})


@lru_cache(maxsize=8192)
def factor_loadings(symbol: str) -> tuple[tuple[int, float], ...]:
    """(seed, weight) of each source of a symbol's randomness, its own first; weights' squares
    sum to one."""
    instrument = get_instrument(symbol)
    if instrument is None:
        raise KeyError(symbol)
    kind = instrument.asset_class
    sign = -1.0 if symbol in AGAINST_THE_FACTOR else 1.0
    factors = [(symbol_seed(f"factor:{kind}"), sign * math.sqrt(MARKET_SHARE[kind]))]
    if kind == "stock":
        sector = SECTORS.get(symbol) or f"synthetic-{symbol_seed(symbol) % SYNTHETIC_SECTORS}"
        factors.append((symbol_seed(f"factor:sector:{sector}"), math.sqrt(SECTOR_SHARE)))
    own = math.sqrt(1.0 - sum(weight**2 for _, weight in factors))
    return ((instrument.seed, own), *factors)


def _mixed_normal(instrument: Instrument, salt: int, *keys: np.ndarray | int) -> np.ndarray:
    """Standard normal draws shared with the instrument's factors (see factor_loadings)."""
    total: np.ndarray | None = None
    for seed, weight in factor_loadings(instrument.symbol):
        draw = weight * _normal(_hash(seed, salt, *keys))
        total = draw if total is None else total + draw
    assert total is not None
    return total


def _uniform(hashed: np.ndarray) -> np.ndarray:
    """Uniform in the open interval (0, 1)."""
    return ((hashed >> _S11).astype(np.float64) + 0.5) * 2.0**-53


def _normal(hashed: np.ndarray) -> np.ndarray:
    """Standard normal by Box-Muller from the two halves of the hash."""
    u1 = ((hashed >> _S32).astype(np.float64) + 0.5) * 2.0**-32
    u2 = ((hashed & _LOW32).astype(np.float64) + 0.5) * 2.0**-32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


# --- daily closes ------------------------------------------------------------------------------

BLOCK_DAYS = 32
BLOCK_REVERSION = 0.9  # AR(1) coefficient per block: prices wander about +-25% around the level
MODEL_FIRST_DAY = 10957 - 64  # 1999-10-30, a little before the first session, in epoch days
MODEL_BLOCKS = (33238 - MODEL_FIRST_DAY) // BLOCK_DAYS + 2  # through 2060-12-31


@lru_cache(maxsize=8192)
def _block_levels(seed: int, volatility: float) -> np.ndarray:
    """Log deviation from the level at each block boundary (index k = start of block k)."""
    block_sd = volatility * math.sqrt(BLOCK_DAYS)
    shocks = block_sd * _normal(_hash(seed, SALT_BLOCK, np.arange(MODEL_BLOCKS + 1)))
    levels = np.empty(MODEL_BLOCKS + 1)
    # Start from the stationary distribution so early history is as realistic as later history.
    level = shocks[0] / math.sqrt(1.0 - BLOCK_REVERSION**2)
    levels[0] = level
    for k in range(1, MODEL_BLOCKS + 1):
        level = BLOCK_REVERSION * level + shocks[k]
        levels[k] = level
    levels.setflags(write=False)
    return levels


def daily_log_close(instrument: Instrument, days: np.ndarray) -> np.ndarray:
    """Log close at the end of each given epoch day (the anchor of the day's session)."""
    relative = np.clip(np.asarray(days, dtype=np.int64) - MODEL_FIRST_DAY, 0, None)
    blocks = relative // BLOCK_DAYS
    unique_blocks, position = np.unique(blocks, return_inverse=True)
    block_days = unique_blocks[:, None] * BLOCK_DAYS + np.arange(BLOCK_DAYS)[None, :]
    steps = instrument.daily_volatility * _mixed_normal(instrument, SALT_DAY, block_days)
    # The walk is linear in its draws, so mixing the block levels mixes the AR(1) shocks.
    levels = np.zeros(MODEL_BLOCKS + 1)
    for seed, weight in factor_loadings(instrument.symbol):
        levels = levels + weight * _block_levels(seed, instrument.daily_volatility)
    start, end = levels[unique_blocks], levels[unique_blocks + 1]
    # Condition the day steps on the block's total so the walk lands on the block's end level.
    steps += ((end - start) / BLOCK_DAYS - steps.mean(axis=1))[:, None]
    paths = start[:, None] + np.cumsum(steps, axis=1)
    level: np.ndarray = paths[position, relative - blocks * BLOCK_DAYS]
    return math.log(instrument.price_level) + level


# --- sessions and the intraday bridge ----------------------------------------------------------

_NOMINAL_SESSION_MINUTES = {
    "stock": regular_session_minutes("XNYS"),
    "crypto": 1440,
    "forex": 1440,
}
_INTRADAY_SHARE = {"stock": 0.8, "crypto": 1.0, "forex": 0.9}  # of the daily volatility
_GAP_SHARE = {"stock": 0.35, "crypto": 0.0, "forex": 0.15}  # overnight/weekend gap


def _minute_sigma(instrument: Instrument) -> float:
    kind = instrument.asset_class
    return (
        instrument.daily_volatility
        * _INTRADAY_SHARE[kind]
        / math.sqrt(_NOMINAL_SESSION_MINUTES[kind])
    )


def session_anchors(
    instrument: Instrument, table: SessionTable, sessions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log open and log close of each session index."""
    day = table.day[sessions]
    previous_day = np.where(sessions > 0, table.day[np.maximum(sessions - 1, 0)], day - 1)
    closes = daily_log_close(instrument, np.concatenate([day, previous_day]))
    log_close, log_previous = closes[: len(day)], closes[len(day) :]
    gap_sd = instrument.daily_volatility * _GAP_SHARE[instrument.asset_class]
    log_open = log_previous
    if gap_sd:
        log_open = log_previous + gap_sd * _mixed_normal(instrument, SALT_GAP, day)
    return log_open, log_close


def _bridge_at_minutes(
    instrument: Instrument,
    day: np.ndarray,
    session_minutes: np.ndarray,
    log_open: np.ndarray,
    log_close: np.ndarray,
    minute: np.ndarray,
) -> np.ndarray:
    """Log price at whole ``minute`` (0..session_minutes) of each session, by Levy refinement."""
    sigma = _minute_sigma(instrument)
    low = np.zeros_like(minute)
    high = session_minutes.astype(np.int64).copy()
    value_low = log_open.astype(np.float64).copy()
    value_high = log_close.astype(np.float64).copy()
    result = np.where(minute <= 0, value_low, value_high)
    active = (minute > 0) & (minute < high)
    while active.any():
        middle = (low + high) // 2
        span = high - low
        left = middle - low
        noise_sd = sigma * np.sqrt(left * (high - middle) / np.maximum(span, 1))
        noise = _mixed_normal(instrument, SALT_BRIDGE, day, middle)
        value_middle = value_low + (value_high - value_low) * (left / np.maximum(span, 1))
        value_middle = value_middle + noise_sd * noise
        found = active & (middle == minute)
        result = np.where(found, value_middle, result)
        go_left = active & (minute < middle)
        go_right = active & (minute > middle)
        high = np.where(go_left, middle, high)
        value_high = np.where(go_left, value_middle, value_high)
        low = np.where(go_right, middle, low)
        value_low = np.where(go_right, value_middle, value_low)
        active = go_left | go_right
    return result


def _bridge_at(
    instrument: Instrument,
    day: np.ndarray,
    session_minutes: np.ndarray,
    log_open: np.ndarray,
    log_close: np.ndarray,
    minute: np.ndarray,
) -> np.ndarray:
    """Log price at possibly fractional minutes: linear between the neighbouring whole minutes."""
    floor = np.floor(minute).astype(np.int64)
    values = _bridge_at_minutes(instrument, day, session_minutes, log_open, log_close, floor)
    fraction = minute - floor
    partial = np.flatnonzero(fraction > 0)
    if len(partial):
        upper = _bridge_at_minutes(
            instrument,
            day[partial],
            session_minutes[partial],
            log_open[partial],
            log_close[partial],
            floor[partial] + 1,
        )
        values[partial] += (upper - values[partial]) * fraction[partial]
    return values


def _extremes(
    instrument: Instrument,
    log_open: np.ndarray,
    log_close: np.ndarray,
    minutes: np.ndarray,
    key_day: np.ndarray,
    key_minute: np.ndarray | int,
    key_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """High and low from the law of a Brownian bridge's max/min between open and close."""
    variance = _minute_sigma(instrument) ** 2 * np.maximum(minutes, 0.0)
    u_high = _uniform(_hash(instrument.seed, SALT_HIGH, key_day, key_minute, key_length))
    u_low = _uniform(_hash(instrument.seed, SALT_LOW, key_day, key_minute, key_length))
    middle = (log_open + log_close) / 2.0
    half_square = ((log_close - log_open) / 2.0) ** 2
    log_high = middle + np.sqrt(half_square - variance * np.log(u_high) / 2.0)
    log_low = middle - np.sqrt(half_square - variance * np.log(u_low) / 2.0)
    return log_high, log_low


_U_SHAPE = 3.0  # volume density at the open and the close relative to midday, minus one


def _volume_share(fraction: np.ndarray) -> np.ndarray:
    """Cumulative share of a session's volume traded by ``fraction`` of the session (U-shaped)."""
    f = np.clip(fraction, 0.0, 1.0)
    share: np.ndarray = (f + _U_SHAPE * ((2.0 * f - 1.0) ** 3 + 1.0) / 6.0) / (1.0 + _U_SHAPE / 3.0)
    return share


def _daily_volume(instrument: Instrument, day: np.ndarray) -> np.ndarray:
    noise = _normal(_hash(instrument.seed, SALT_DAYVOL, day))
    return instrument.average_daily_volume * np.exp(0.3 * noise - 0.045)


def round_prices(instrument: Instrument, values: np.ndarray) -> np.ndarray:
    """Prices as the API stores them: cents (stocks as float32, hence "235.029999"), ticks."""
    rounded = np.round(values, instrument.price_decimals)
    if instrument.asset_class == "stock":
        return rounded.astype(np.float32).astype(np.float64)
    return rounded


# --- bars ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarSeries:
    """Bars of one symbol and interval, oldest first; times are UTC epoch seconds."""

    instrument: Instrument
    interval: str
    open_time: np.ndarray
    label_day: np.ndarray  # epoch day a daily/weekly/monthly bar is dated with
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray | None
    is_complete: np.ndarray

    def __len__(self) -> int:
        return len(self.open_time)

    def tail(self, count: int) -> BarSeries:
        """The newest ``count`` bars."""
        start = max(0, len(self) - count)
        return self.slice(start, len(self))

    def slice(self, start: int, stop: int) -> BarSeries:
        return BarSeries(
            self.instrument,
            self.interval,
            self.open_time[start:stop],
            self.label_day[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            None if self.volume is None else self.volume[start:stop],
            self.is_complete[start:stop],
        )


def _to_epoch(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp())


def model_bars(
    symbol: str,
    interval: str,
    now: datetime,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    outputsize: int = 30,
) -> BarSeries:
    """The model's bars for ``symbol`` at ``interval`` as the sandbox serves them at ``now``.

    Bars open at or after ``start`` and before ``end`` (both instants; naive means UTC) and
    before ``now``; the newest ``outputsize`` of them, oldest first. A bar still open at ``now``
    is incomplete: its close is the price at ``now``. Raises KeyError for an unknown symbol and
    ValueError for an unknown interval.
    """
    instrument = get_instrument(symbol)
    if instrument is None:
        raise KeyError(symbol)
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}")
    now_s = _to_epoch(now)
    assert now_s is not None
    limit = now_s if end is None else min(now_s, _to_epoch(end) or now_s)
    start_s = _to_epoch(start)
    table = session_table(instrument.calendar)
    if interval in INTRADAY_MINUTES:
        return _intraday_bars(
            instrument, table, interval, now_s, limit, start_s, max(outputsize, 0)
        )
    return _calendar_bars(instrument, table, interval, now_s, limit, start_s, max(outputsize, 0))


@lru_cache(maxsize=64)
def _bars_per_session(name: CalendarName, minutes: int) -> tuple[np.ndarray, np.ndarray]:
    """Bars in each session and their running total (cum[j] = bars before session j)."""
    table = session_table(name)
    counts = -(-(table.close_s - table.open_s) // (minutes * 60))
    cumulative = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return counts, cumulative


def _intraday_bars(
    instrument: Instrument,
    table: SessionTable,
    interval: str,
    now_s: int,
    limit_s: int,
    start_s: int | None,
    outputsize: int,
) -> BarSeries:
    minutes = INTRADAY_MINUTES[interval]
    step = minutes * 60
    counts, cumulative = _bars_per_session(instrument.calendar, minutes)
    last_session = int(np.searchsorted(table.open_s, limit_s, side="left")) - 1
    if last_session < 0:
        return _empty(instrument, interval)
    elapsed = limit_s - int(table.open_s[last_session])
    in_last = min(int(counts[last_session]), -(-elapsed // step))
    stop = int(cumulative[last_session]) + in_last
    first = max(0, stop - outputsize)
    if start_s is not None:
        first = max(first, _first_bar_at_or_after(table, counts, cumulative, step, start_s))
    if first >= stop:
        return _empty(instrument, interval)

    index = np.arange(first, stop, dtype=np.int64)
    session = np.searchsorted(cumulative, index, side="right") - 1
    minute_open = (index - cumulative[session]) * minutes
    session_open = table.open_s[session]
    session_minutes = (table.close_s[session] - session_open) // 60
    minute_close = np.minimum(minute_open + minutes, session_minutes)
    open_time = session_open + minute_open * 60
    is_complete = session_open + minute_close * 60 <= now_s
    minute_close_now = np.where(is_complete, minute_close, (now_s - session_open) / 60.0).astype(
        np.float64
    )

    unique_sessions, position = np.unique(session, return_inverse=True)
    log_open_s, log_close_s = session_anchors(instrument, table, unique_sessions)
    log_open_s, log_close_s = log_open_s[position], log_close_s[position]
    day = table.day[session]
    log_open = _bridge_at_minutes(
        instrument, day, session_minutes, log_open_s, log_close_s, minute_open
    )
    log_close = _bridge_at(
        instrument, day, session_minutes, log_open_s, log_close_s, minute_close_now
    )
    log_high, log_low = _extremes(
        instrument, log_open, log_close, minute_close_now - minute_open, day, minute_open, minutes
    )
    volume = None
    if instrument.has_volume:
        share = _volume_share(minute_close_now / session_minutes) - _volume_share(
            minute_open / session_minutes
        )
        noise = np.exp(
            0.2 * _normal(_hash(instrument.seed, SALT_BARVOL, day, minute_open, minutes)) - 0.02
        )
        volume = np.round(_daily_volume(instrument, day) * share * noise).astype(np.int64)
    return BarSeries(
        instrument,
        interval,
        open_time,
        day,
        round_prices(instrument, np.exp(log_open)),
        round_prices(instrument, np.exp(log_high)),
        round_prices(instrument, np.exp(log_low)),
        round_prices(instrument, np.exp(log_close)),
        volume,
        is_complete,
    )


def _first_bar_at_or_after(
    table: SessionTable, counts: np.ndarray, cumulative: np.ndarray, step: int, start_s: int
) -> int:
    session = int(np.searchsorted(table.open_s, start_s, side="right")) - 1
    if session < 0:
        return 0
    offset = -(-(start_s - int(table.open_s[session])) // step)
    if offset >= counts[session]:
        return int(cumulative[session + 1])
    return int(cumulative[session]) + offset


def _empty(instrument: Instrument, interval: str) -> BarSeries:
    nothing = np.zeros(0, dtype=np.float64)
    return BarSeries(
        instrument,
        interval,
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        nothing,
        nothing,
        nothing,
        nothing,
        np.zeros(0, dtype=np.int64) if instrument.has_volume else None,
        np.zeros(0, dtype=bool),
    )


def _session_bars(
    instrument: Instrument, table: SessionTable, sessions: np.ndarray, now_s: int
) -> tuple[np.ndarray, ...]:
    """(log open, log high, log low, log close, volume, complete) of whole sessions at now."""
    log_open, log_close_final = session_anchors(instrument, table, sessions)
    day = table.day[sessions]
    session_open = table.open_s[sessions]
    session_minutes = (table.close_s[sessions] - session_open) // 60
    is_complete = table.close_s[sessions] <= now_s
    elapsed = np.where(is_complete, session_minutes, (now_s - session_open) / 60.0).astype(
        np.float64
    )
    log_close = log_close_final.copy()
    running = np.flatnonzero(~is_complete)
    if len(running):
        log_close[running] = _bridge_at(
            instrument,
            day[running],
            session_minutes[running],
            log_open[running],
            log_close_final[running],
            elapsed[running],
        )
    log_high, log_low = _extremes(instrument, log_open, log_close, elapsed, day, 0, 1440)
    if instrument.has_volume:
        volume = _daily_volume(instrument, day) * _volume_share(elapsed / session_minutes)
    else:
        volume = np.zeros(len(sessions))
    return log_open, log_high, log_low, log_close, volume, is_complete


def _group_key(days: np.ndarray, interval: str) -> np.ndarray:
    if interval == "1day":
        return days
    if interval == "1week":
        return (days - 4) // 7  # 1970-01-05 was a Monday
    months = days.astype("datetime64[D]").astype("datetime64[M]")
    return months.astype(np.int64)


def _group_label_day(key: np.ndarray, interval: str) -> np.ndarray:
    if interval == "1day":
        return key
    if interval == "1week":
        return key * 7 + 4
    return key.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


_SESSIONS_PER_BAR = {"1day": 1, "1week": 7, "1month": 31}


def _calendar_bars(
    instrument: Instrument,
    table: SessionTable,
    interval: str,
    now_s: int,
    limit_s: int,
    start_s: int | None,
    outputsize: int,
) -> BarSeries:
    last_session = int(np.searchsorted(table.open_s, limit_s, side="left")) - 1
    if last_session < 0 or outputsize == 0:
        return _empty(instrument, interval)
    keys = _group_key(table.day, interval)
    first_session = max(0, last_session + 1 - (outputsize + 1) * _SESSIONS_PER_BAR[interval])
    # Start at a group boundary so the oldest bar is never a truncated week or month.
    first_session = int(np.searchsorted(keys, keys[first_session], side="left"))
    if start_s is not None:
        first_start = int(np.searchsorted(table.open_s, start_s, side="left"))
        first_session = max(first_session, first_start)
    if first_session > last_session:
        return _empty(instrument, interval)
    sessions = np.arange(first_session, last_session + 1, dtype=np.int64)
    session_keys = keys[sessions]
    group_starts = np.flatnonzero(np.diff(session_keys, prepend=session_keys[0] - 1))
    if start_s is not None and interval != "1day":
        # A week or month bar is in the window only if its first session is.
        group_open = table.open_s[sessions[group_starts]]
        group_starts = group_starts[group_open >= start_s]
        if len(group_starts) == 0:
            return _empty(instrument, interval)
        sessions = sessions[group_starts[0] :]
        session_keys = keys[sessions]
        group_starts = group_starts - group_starts[0]
    group_starts = group_starts[-outputsize:]
    sessions = sessions[group_starts[0] :]
    session_keys = session_keys[group_starts[0] :]
    group_starts = group_starts - group_starts[0]

    log_open, log_high, log_low, log_close, volume, complete = _session_bars(
        instrument, table, sessions, now_s
    )
    group_ends = np.append(group_starts[1:], len(sessions)) - 1
    bar_volume = None
    if instrument.has_volume:
        bar_volume = np.round(np.add.reduceat(volume, group_starts)).astype(np.int64)
    return BarSeries(
        instrument,
        interval,
        table.open_s[sessions[group_starts]],
        _group_label_day(session_keys[group_starts], interval),
        round_prices(instrument, np.exp(log_open[group_starts])),
        round_prices(instrument, np.exp(np.maximum.reduceat(log_high, group_starts))),
        round_prices(instrument, np.exp(np.minimum.reduceat(log_low, group_starts))),
        round_prices(instrument, np.exp(log_close[group_ends])),
        bar_volume,
        _period_complete(table, keys, session_keys[group_starts], complete[group_ends], now_s),
    )


def _period_complete(
    table: SessionTable,
    keys: np.ndarray,
    bar_keys: np.ndarray,
    last_served_complete: np.ndarray,
    now_s: int,
) -> np.ndarray:
    """A week or month is final only once its last session of the calendar has closed."""
    last_of_period = np.searchsorted(keys, bar_keys, side="right") - 1
    return last_served_complete & (table.close_s[last_of_period] <= now_s)
