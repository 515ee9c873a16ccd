from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from marketpipe.market import session_close, venue
from services.sandbox.calendar import UNIX_EPOCH_DAY, session_table, utc_offsets


def test_the_stock_table_is_the_pipelines_calendar() -> None:
    """The sandbox's NYSE sessions are marketpipe.market's, holidays and early closes included."""
    stocks = session_table("XNYS")
    place = venue("stock", "America/New_York")
    days = [UNIX_EPOCH_DAY + timedelta(days=int(d)) for d in stocks.day]
    assert date(2026, 11, 26) not in days  # Thanksgiving
    assert date(2026, 4, 3) not in days  # Good Friday
    for index in np.flatnonzero(stocks.day >= (date(2026, 1, 1) - UNIX_EPOCH_DAY).days)[:300]:
        close = session_close(place, days[index])
        assert close is not None and int(close.timestamp()) == stocks.close_s[index]
    early = days.index(date(2026, 11, 27))
    assert stocks.close_s[early] == int(datetime(2026, 11, 27, 18, 0, tzinfo=UTC).timestamp())


def test_session_tables() -> None:
    stocks = session_table("XNYS")
    crypto = session_table("CRYPTO")
    forex = session_table("FOREX")
    assert np.all(np.diff(stocks.open_s) > 0)
    assert np.all(stocks.close_s - stocks.open_s <= 390 * 60)
    assert len(crypto) > len(forex) > len(stocks)
    weekdays = (forex.day + 3) % 7
    assert weekdays.max() == 4  # Monday..Friday only
    assert set(np.unique(crypto.close_s - crypto.open_s).tolist()) == {86400}


def test_utc_offsets_match_zoneinfo_across_transitions() -> None:
    zone = ZoneInfo("America/New_York")
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
    instants = np.arange(start, start + 280 * 86400, 3600 * 7, dtype=np.int64)
    expected = [
        int(datetime.fromtimestamp(int(t), zone).utcoffset().total_seconds())  # type: ignore[union-attr]
        for t in instants
    ]
    assert utc_offsets(instants, zone).tolist() == expected
    assert set(expected) == {-4 * 3600, -5 * 3600}
