"""recompute.py: when the stored series changes under stored bars, their state is recomputed.

Each case loads real payloads through the transform and load jobs, changes the series the way
production does (a restated stretch, a replayed payload filling a hole, a backfill of older
history, a load landing between another payload's transform and its load, a restatement written
outside a load and announced through the recompute entry point), and then compares every stored
derived column with one loop-reference pass over the whole stored series, to 1e-9.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg2
from redis import Redis

from marketpipe import broker
from marketpipe.contract import RawPayload
from marketpipe.raw import land_payload
from marketpipe.settings import Settings
from services.loader.jobs import load, recompute_stored
from services.transformer.jobs import transform
from tests.support.series import assert_matches_one_pass, stored_series
from tests.unit.transformer.payloads import CRYPTO_META, FAR_FUTURE, bar, payload

# Daily crypto bars: 700 days, so a series holds more than a year and later payloads continue
# stored state instead of re-reading the series from its start.
INTERVAL = "1day"
SYMBOL = "BTC/USD"
START = datetime(2024, 1, 1)
CLOSES = (30_000 * np.exp(np.cumsum(np.random.default_rng(18).normal(0, 0.03, 700)))).round(5)


def day(i: int) -> str:
    return (START + timedelta(days=i)).strftime("%Y-%m-%d")


def stretch(first: int, last: int, restated: dict[int, float] | None = None) -> RawPayload:
    """The API's answer for days first..last (inclusive), some closes restated."""
    closes = {i: float(CLOSES[i]) for i in range(first, last + 1)} | (restated or {})
    values = [bar(day(i), c, spread=c * 0.01) for i, c in closes.items()]
    return payload(SYMBOL, CRYPTO_META, values, fetched_at=FAR_FUTURE, interval=INTERVAL)


def landed(settings: Settings, answer: RawPayload) -> str:
    land_payload(settings.admin_url, answer)
    return answer.payload_id


def run(settings: Settings, answer: RawPayload) -> int:
    """Transform and load one payload, as the jobs do; bars changed."""
    payload_id = landed(settings, answer)
    transform(settings, payload_id)
    return int(load(settings, payload_id)["bars_changed"])


def series(settings: Settings):  # type: ignore[no-untyped-def]
    return stored_series(settings, SYMBOL, INTERVAL)


def test_a_restated_stretch_recomputes_the_bars_after_it(clean_db: Settings, redis: Redis) -> None:
    run(clean_db, stretch(0, 699))
    before = series(clean_db)
    restated = round(float(CLOSES[310]) * 1.2, 5)
    changed_stretch = stretch(300, 320, {310: restated})
    # A re-served bar that differs is a restatement (services/loader/restatement.py): held back.
    assert run(clean_db, changed_stretch) == 0
    assert series(clean_db)["close"].iloc[310] == before["close"].iloc[310]
    # This test is about the stale state after such a change: the batch merged as a batch
    # without the restatement check (without its observed bars) would be.
    broker.redis_from(clean_db).hdel(broker._batch_key(changed_stretch.payload_id), "observed")
    changed = int(load(clean_db, changed_stretch.payload_id)["bars_changed"])

    after = series(clean_db)
    assert after["close"].iloc[310] == restated
    assert_matches_one_pass(after, INTERVAL)
    # Bars after the stretch were rewritten (their EMAs moved), not only the stretch itself.
    assert changed > 21
    assert abs(after["ema_26"].iloc[400] - before["ema_26"].iloc[400]) > 1e-6


def test_a_replayed_payload_filling_a_hole_recomputes_what_follows(
    clean_db: Settings, redis: Redis
) -> None:
    first, late, later = stretch(0, 399), stretch(380, 460), stretch(450, 699)
    run(clean_db, first)
    late_id = landed(clean_db, late)  # landed, its transform failed: nothing of it stored
    run(clean_db, later)
    assert len(series(clean_db)) == 400 + 250
    assert_matches_one_pass(series(clean_db), INTERVAL)

    transform(clean_db, late_id)  # ops replay, once the cause is fixed
    load(clean_db, late_id)
    full = series(clean_db)
    assert len(full) == 700
    assert_matches_one_pass(full, INTERVAL)


def test_a_backfill_of_older_history_recomputes_the_newer_bars(
    clean_db: Settings, redis: Redis
) -> None:
    run(clean_db, stretch(400, 699))
    newer = series(clean_db)
    assert newer["high_52w"].iloc[:365].isna().all()  # did not reach a year back

    run(clean_db, stretch(0, 399))
    full = series(clean_db)
    assert len(full) == 700
    assert_matches_one_pass(full, INTERVAL)
    assert full["high_52w"].iloc[400:].notna().all()  # now they do


def test_a_load_between_a_transform_and_its_own_load_is_recomputed(
    clean_db: Settings, redis: Redis
) -> None:
    run(clean_db, stretch(0, 399))
    earlier, later = landed(clean_db, stretch(380, 450)), landed(clean_db, stretch(430, 520))
    transform(clean_db, earlier)
    transform(clean_db, later)  # read the series without 400..450: its state is stale
    load(clean_db, earlier)
    load(clean_db, later)
    assert_matches_one_pass(series(clean_db), INTERVAL)


def test_the_recompute_entry_point_repairs_a_bar_changed_outside_a_load(
    clean_db: Settings, redis: Redis
) -> None:
    run(clean_db, stretch(0, 699))
    when = datetime.fromisoformat(day(500)).replace(tzinfo=UTC)
    conn = psycopg2.connect(clean_db.database_url)
    with conn, conn.cursor() as cur:  # a restatement written by someone else
        cur.execute(
            "UPDATE marketpipe.bars SET close = close * 0.9, low = low * 0.9"
            " WHERE symbol = %s AND interval = %s AND bar_time = %s",
            (SYMBOL, INTERVAL, when),
        )
    conn.close()

    result = recompute_stored(clean_db, SYMBOL, INTERVAL, when, when)
    assert result["bars_changed"] > 100
    assert_matches_one_pass(series(clean_db), INTERVAL)
    assert recompute_stored(clean_db, SYMBOL, INTERVAL, when)["bars_changed"] == 0
