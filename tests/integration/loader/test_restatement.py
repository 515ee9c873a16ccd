"""Restatements in the loader on real PostgreSQL and Redis: detected, held back, swapped in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis import Redis

from marketpipe import broker
from marketpipe.contract import RawPayload
from marketpipe.queues import restatement_batch_id
from marketpipe.raw import land_payload
from marketpipe.settings import Settings
from services.loader.jobs import load, load_restated
from services.transformer.transform import transform_series
from tests.support.sql import query as run_query
from tests.unit.transformer.payloads import STOCK_META, bar, payload, stock_session_times

FIRST_DAY = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
TIMES = stock_session_times(FIRST_DAY, 5)  # 35 hourly bars, Monday .. Friday
FETCHED = datetime(2026, 3, 9, tzinfo=UTC)  # every bar complete


def values(times: list[str], divisor: float = 1.0) -> list[dict[str, str]]:
    rows = []
    for i, when in enumerate(times):
        row = bar(when, 200.0 + i % 9, volume=100_000 + 1000 * i)
        for price in ("open", "high", "low", "close"):
            row[price] = f"{float(row[price]) / divisor:.6f}".rstrip("0")
        row["volume"] = str(round(float(row["volume"]) * divisor))
        rows.append(row)
    return rows


def land(redis: Redis, settings: Settings, rows: list[dict[str, str]]) -> RawPayload:
    """Land a payload as the fetcher does and leave its batch as the transformer does."""
    raw = payload("AAPL", STOCK_META, rows, fetched_at=FETCHED)
    land_payload(settings.role_url("fetcher"), raw)
    result = transform_series(raw, now=FETCHED)
    frames = {"bars": result.bars, "quarantine": result.quarantine, "observed": result.observed}
    broker.put_batch(redis, raw.payload_id, frames, settings.blob_ttl_seconds)
    return raw


def query(settings: Settings, statement: str, *params: Any) -> list[tuple]:
    return run_query(settings.database_url, statement, *params)


def bars(settings: Settings) -> list[tuple]:
    return query(
        settings,
        "SELECT bar_time, open, high, low, close, volume, sma_20 FROM marketpipe.bars"
        " WHERE symbol = 'AAPL' ORDER BY bar_time",
    )


def restatements(settings: Settings) -> list[tuple]:
    return query(
        settings,
        "SELECT restatement_id, kind, ratio, max_difference, first_bar, last_bar, bars_affected,"
        " payload_id, history_from, status FROM marketpipe.restatements ORDER BY 1",
    )


def test_a_split_is_detected_held_back_and_swapped_in_whole(
    clean_db: Settings, redis: Redis
) -> None:
    first = land(redis, clean_db, values(TIMES[:28]))  # Monday .. Thursday stored
    load(clean_db, first.payload_id)
    stored = bars(clean_db)
    watermark = query(clean_db, "SELECT last_complete_bar FROM marketpipe.watermarks")

    # After a 4-for-1 split every earlier bar comes back divided by 4, next to Friday's new bars.
    split = land(redis, clean_db, values(TIMES, divisor=4.0))
    assert load(clean_db, split.payload_id)["bars_changed"] == 0
    assert bars(clean_db) == stored  # nothing merged: no mixture of old and new prices
    assert query(clean_db, "SELECT last_complete_bar FROM marketpipe.watermarks") == watermark
    [found] = restatements(clean_db)
    restatement_id, kind, ratio, _, first_bar, last_bar, affected, payload_id, since, status = found
    assert (kind, status, payload_id) == ("split", "detected", split.payload_id)
    assert ratio == pytest.approx(4.0, rel=1e-8)
    assert (first_bar, last_bar, affected) == (stored[0][0], stored[-1][0], len(stored))
    assert since == stored[0][0]
    [(run_status, message)] = query(
        clean_db,
        "SELECT status, message FROM marketpipe.pipeline_runs WHERE payload_id = %s",
        split.payload_id,
    )
    assert run_status == "partial" and f"#{restatement_id}" in message

    # The same change seen again (the next tick) opens nothing new.
    again = land(redis, clean_db, values(TIMES[1:], divisor=4.0))
    load(clean_db, again.payload_id)
    assert len(restatements(clean_db)) == 1

    # The re-fetched series, which no longer has Monday's first bar, swapped in.
    refetched = transform_series(
        payload("AAPL", STOCK_META, values(TIMES, divisor=4.0)[1:], fetched_at=FETCHED),
        now=FETCHED,
    )
    broker.put_batch(
        redis,
        restatement_batch_id(restatement_id),
        {"bars": refetched.bars, "quarantine": refetched.quarantine},
        clean_db.blob_ttl_seconds,
    )
    assert load_restated(clean_db, restatement_id) == {
        "restated": True,
        "bars": len(TIMES) - 1,
        "bars_changed": len(TIMES) - 1,
        "bars_removed": 1,
    }
    after = bars(clean_db)
    assert [row[0] for row in after] == [row[0] for row in stored[1:]] + [
        datetime.fromisoformat(t).replace(tzinfo=UTC) + timedelta(hours=5) for t in TIMES[28:]
    ]  # 09:30 New York is 14:30 UTC in early March
    for old, new in zip(stored[1:], after, strict=False):
        assert new[4] == pytest.approx(old[4] / 4, rel=1e-8)
        assert new[5] == old[5] * 4
    [(status, removed, removed_bars, restated)] = query(
        clean_db,
        "SELECT status, bars_removed, removed_bars, bars_restated FROM marketpipe.restatements",
    )
    assert (status, removed, restated) == ("restated", 1, len(TIMES) - 1)
    assert [r["close"] for r in removed_bars] == [stored[0][4]]
    # Daily bars follow the new series; the watermark is its newest complete bar.
    daily = query(
        clean_db,
        "SELECT trading_date, close, bar_count FROM marketpipe.daily_bars ORDER BY 1",
    )
    assert [d[2] for d in daily] == [6, 7, 7, 7, 7]
    assert daily[-1][1] == after[-1][4]
    assert query(clean_db, "SELECT last_complete_bar FROM marketpipe.watermarks") == [
        (after[-1][0],)
    ]
    # The swap job run again changes nothing; a tick after the restatement merges again.
    assert load_restated(clean_db, restatement_id) == {"restated": False}
    assert bars(clean_db) == after
    later = land(redis, clean_db, values(TIMES, divisor=4.0)[1:])
    load(clean_db, later.payload_id)
    assert len(restatements(clean_db)) == 1 and bars(clean_db) == after


def test_one_corrected_bar_is_a_correction(clean_db: Settings, redis: Redis) -> None:
    load(clean_db, land(redis, clean_db, values(TIMES[:20])).payload_id)
    stored = bars(clean_db)
    corrected = values(TIMES[:21])
    corrected[10]["close"] = f"{float(corrected[10]['close']) * 1.01:.5f}"
    corrected[10]["high"] = max(corrected[10]["high"], corrected[10]["close"], key=float)
    load(clean_db, land(redis, clean_db, corrected).payload_id)
    assert bars(clean_db) == stored
    [found] = restatements(clean_db)
    _, kind, ratio, difference, first_bar, last_bar, affected, _, _, status = found
    assert (kind, ratio, status, affected) == ("correction", None, "detected", 1)
    assert first_bar == last_bar == stored[10][0]
    assert difference == pytest.approx(0.01 / 1.01, rel=1e-5)


def test_the_still_open_bar_and_missing_bars_are_no_restatement(
    clean_db: Settings, redis: Redis
) -> None:
    load(clean_db, land(redis, clean_db, values(TIMES[:20])).payload_id)
    # Some bars left out (the API has gaps) and new ones: an ordinary tick.
    tick = values(TIMES[:25])
    del tick[5:8]
    load(clean_db, land(redis, clean_db, tick).payload_id)
    assert restatements(clean_db) == []
    assert len(bars(clean_db)) == 25  # merged: the new bars are in, the unsent ones kept
