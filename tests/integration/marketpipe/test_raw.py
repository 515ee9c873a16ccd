"""The raw landing table through marketpipe.raw, with each service's own role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from marketpipe.contract import RawPayload
from marketpipe.raw import PayloadNotLandedError, land_payload, landed_payloads, read_payload
from marketpipe.settings import Settings
from tests.unit.transformer.payloads import CRYPTO_META, bar, hourly_times, payload

FETCHED = datetime(2026, 3, 2, tzinfo=UTC)


def answer(close: float, fetched_at: datetime = FETCHED, symbol: str = "ETH/USD") -> RawPayload:
    values = [bar(t, close + i) for i, t in enumerate(hourly_times(datetime(2026, 3, 1), 3))]
    return payload(symbol, CRYPTO_META, values, fetched_at=fetched_at)


def test_a_payload_is_landed_once_and_read_back_exactly(clean_db: Settings) -> None:
    first = answer(100)
    assert land_payload(clean_db.role_url("fetcher"), first) is True
    # The same answer fetched again later: same content address, the landed row stays as it was.
    again = first.model_copy(update={"fetched_at": FETCHED + timedelta(hours=1)})
    assert land_payload(clean_db.role_url("fetcher"), again) is False
    assert read_payload(clean_db.role_url("transformer"), first.payload_id) == first


def test_reading_a_payload_never_landed_says_so(clean_db: Settings) -> None:
    with pytest.raises(PayloadNotLandedError, match="never-landed"):
        read_payload(clean_db.role_url("transformer"), "never-landed")


def test_landed_payloads_selects_a_window_oldest_first(clean_db: Settings) -> None:
    inside = [answer(100 + i, FETCHED + timedelta(hours=i)) for i in (2, 0, 1)]
    outside = answer(500, FETCHED + timedelta(days=1))
    other = answer(7, FETCHED, symbol="SOL/USD")
    for item in (*inside, outside, other):
        land_payload(clean_db.role_url("fetcher"), item)
    until = FETCHED + timedelta(hours=12)
    found = landed_payloads(clean_db.admin_url, FETCHED, until, "1h", ["ETH/USD"])
    assert [p.payload_id for p in found] == [
        p.payload_id for p in sorted(inside, key=lambda p: p.fetched_at)
    ]
    assert len(landed_payloads(clean_db.admin_url, FETCHED, until, "1h")) == 4
    assert landed_payloads(clean_db.admin_url, FETCHED, until, "1day") == []


def test_a_body_that_is_a_bare_json_string_stays_a_string(clean_db: Settings) -> None:
    html = answer(1).model_copy(update={"payload_id": "html", "body": "<html>502</html>"})
    land_payload(clean_db.role_url("fetcher"), html)
    assert read_payload(clean_db.role_url("transformer"), "html").body == "<html>502</html>"
