"""The upsert on real PostgreSQL: a value changes only beyond a relative 1e-12 of its scale."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis import Redis

from marketpipe import broker
from marketpipe.contract import OLAP_COLUMNS, OLAP_KEY
from marketpipe.db import adbc_connect
from marketpipe.settings import Settings
from services.loader.jobs import LINEAGE, stored_bars
from services.loader.upsert import (
    RELATIVE_TOLERANCE,
    changed_condition,
    changed_rows,
    prepare_session,
    stage,
    upsert,
    upsert_known,
)
from tests.integration.loader.conftest import put_batch

BARS = 72
FLOATS = [name for name, sql_type in OLAP_COLUMNS if sql_type == "double precision"]


WRITES = ("merge", "known")


def upsert_bars(settings: Settings, bars: pa.Table, write: str = "merge") -> int:
    """One upsert of ``bars`` into marketpipe.bars in its own transaction; rows written.

    ``write``: "merge" stages and MERGEs (:func:`upsert`, the plain reference); "known" reads
    the stored rows under the series' lock and compares them in Arrow (:func:`upsert_known`,
    what a load job does).
    """
    with adbc_connect(settings.role_url("loader")) as conn, conn.cursor() as cur:
        if write == "merge":
            prepare_session(cur)
            written = upsert(cur, "bars", bars, OLAP_COLUMNS, OLAP_KEY, lineage=LINEAGE)
        else:
            series = bars["symbol"][0].as_py(), bars["interval"][0].as_py()
            prepare_session(cur, lock_series=series[0])
            span = pc.min_max(bars["bar_time"]).as_py()
            known = stored_bars(cur, series, span["min"], span["max"] + timedelta(microseconds=1))
            keys = upsert_known(cur, "bars", bars, known, OLAP_COLUMNS, OLAP_KEY, lineage=LINEAGE)
            written = len(keys)
        conn.commit()
    return written


def stored(settings: Settings) -> dict[str, tuple]:
    """bar_time -> (close, sma_200, instrument_name, loaded_at, xmin) of every stored bar."""
    conn = psycopg2.connect(settings.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT bar_time::text, close, sma_200, instrument_name, loaded_at, xmin::text"
            " FROM marketpipe.bars"
        )
        rows = {r[0]: r[1:] for r in cur.fetchall()}
    conn.close()
    return rows


def scaled(bars: pa.Table, factor: Callable[[int], np.ndarray], columns: list[str]) -> pa.Table:
    """``bars`` with each of ``columns`` multiplied element-wise by ``factor(rows)``."""
    for name in columns:
        index = bars.schema.get_field_index(name)
        bars = bars.set_column(index, name, pc.multiply(bars[name], pa.array(factor(len(bars)))))
    return bars


@pytest.fixture
def loaded(clean_db: Settings, redis: Redis) -> pa.Table:
    """A real transformed batch, loaded once; the bars as the loader read them."""
    bars = broker.get_batch_tables(redis, put_batch(redis, clean_db, "BTC/USD", BARS))["bars"]
    assert upsert_bars(clean_db, bars) == BARS
    return bars


@pytest.fixture(params=WRITES)
def write(request: pytest.FixtureRequest) -> str:
    """Each change-rule test runs through both write paths: they must agree."""
    return str(request.param)


def test_noise_below_the_tolerance_rewrites_no_row(
    clean_db: Settings, loaded: pa.Table, write: str
) -> None:
    before = stored(clean_db)
    rng = np.random.default_rng(12)
    # What a re-sent bar computed from a longer history looks like: every float off by up to
    # 50 ulps-ish (relative 5e-13), and lineage (another transform) different too.
    noisy = scaled(
        loaded, lambda n: 1 + rng.uniform(-0.5, 0.5, n) * RELATIVE_TOLERANCE, FLOATS
    ).set_column(
        loaded.schema.get_field_index("payload_id"),
        "payload_id",
        pa.array(["another-payload"] * BARS),
    )
    assert not noisy["close"].equals(loaded["close"])
    assert upsert_bars(clean_db, noisy, write) == 0
    assert stored(clean_db) == before  # same values, loaded_at and row version


def test_a_change_beyond_the_tolerance_is_written(
    clean_db: Settings, loaded: pa.Table, write: str
) -> None:
    before = stored(clean_db)
    one = np.zeros(BARS)
    one[5] = 1.0
    revised = scaled(loaded, lambda n: 1 + one * 3 * RELATIVE_TOLERANCE, ["close"])
    assert upsert_bars(clean_db, revised, write) == 1
    after = stored(clean_db)
    changed = {t for t in before if after[t] != before[t]}
    assert len(changed) == 1
    (when,) = changed
    assert after[when][0] != before[when][0]
    assert after[when][3] > before[when][3]  # loaded_at says when the row was rewritten


def replaced(bars: pa.Table, column: str, values: np.ndarray) -> pa.Table:
    return bars.set_column(bars.schema.get_field_index(column), column, pa.array(values))


@pytest.mark.parametrize(("column", "rewritten"), [("macd", 0), ("pct_change", BARS)])
def test_a_price_unit_value_is_compared_on_the_scale_of_the_close(
    clean_db: Settings, loaded: pa.Table, column: str, rewritten: int, write: str
) -> None:
    # A value near zero (MACD where the two EMAs meet), moved by less than 1e-12 of the close
    # but by far more than 1e-12 of itself: rounding for MACD (price unit), a change for
    # pct_change (a ratio, not computed from the price scale).
    close = loaded["close"].to_numpy()
    near_zero = np.full(BARS, 1e-6)
    assert upsert_bars(clean_db, replaced(loaded, column, near_zero), write) == BARS
    moved = near_zero + 0.5 * RELATIVE_TOLERANCE * close
    assert (np.abs(moved - near_zero) > 1e3 * RELATIVE_TOLERANCE * near_zero).all()
    assert upsert_bars(clean_db, replaced(loaded, column, moved), write) == rewritten


def test_null_to_value_and_text_changes_are_written(
    clean_db: Settings, loaded: pa.Table, write: str
) -> None:
    before = stored(clean_db)
    assert all(row[1] is None for row in before.values())  # 72 bars: no SMA 200 yet
    sma = pa.array([1.0] + [None] * (BARS - 1), pa.float64())
    name = pa.array(["Renamed"] * 2 + [None] * (BARS - 2), pa.large_string())
    edited = loaded.set_column(loaded.schema.get_field_index("sma_200"), "sma_200", sma)
    edited = edited.set_column(
        edited.schema.get_field_index("instrument_name"),
        "instrument_name",
        pc.coalesce(name, edited["instrument_name"].cast(pa.large_string())),
    )
    assert upsert_bars(clean_db, edited, write) == 2  # row 0 has both edits, row 1 the name
    after = stored(clean_db)
    assert sum(after[t] != before[t] for t in before) == 2


@pytest.mark.parametrize("seed", range(3))
def test_stored_rows_in_many_runs_are_replaced_exactly_and_new_ones_added(
    clean_db: Settings, redis: Redis, seed: int
) -> None:
    # Stored: every bar but a random few; the batch changes a random pattern of the stored ones
    # (runs of every length, the first and last bar included), leaves the others, adds the rest.
    rng = np.random.default_rng(seed)
    bars = broker.get_batch_tables(redis, put_batch(redis, clean_db, "BTC/USD", BARS))["bars"]
    held = rng.random(BARS) < 0.8
    assert upsert_bars(clean_db, bars.filter(pa.array(held))) == held.sum()
    before = stored(clean_db)
    change = held & (rng.random(BARS) < 0.5)
    change[0] = change[-1] = held[0] and held[-1]
    revised = scaled(bars, lambda n: 1 + change * 1e-6, ["close"])
    assert upsert_bars(clean_db, revised, "known") == change.sum() + (~held).sum()
    after = stored(clean_db)
    assert len(after) == BARS  # nothing lost, nothing doubled
    times = sorted(after)  # PostgreSQL's text of a UTC time sorts as the time
    rewritten = {t for t in before if after[t] != before[t]}
    assert len(rewritten) == change.sum()
    for when, changed in zip(times, change, strict=True):
        if changed:
            assert after[when][0] != before[when][0]


def wait_until_blocked(settings: Settings, pid: int) -> None:
    """Returns once backend ``pid`` waits on another transaction's lock (fails after 60 s)."""
    conn = psycopg2.connect(settings.database_url)
    conn.autocommit = True
    deadline = time.monotonic() + 60
    with conn.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("SELECT cardinality(pg_blocking_pids(%s)) > 0", (pid,))
            if cur.fetchone() == (True,):
                conn.close()
                return
    conn.close()
    pytest.fail(f"backend {pid} never waited for the other loader")


def test_two_loaders_on_overlapping_keys_both_land_and_count_exactly(
    clean_db: Settings, redis: Redis
) -> None:
    first = broker.get_batch_tables(redis, put_batch(redis, clean_db, "BTC/USD", BARS))["bars"]
    overlap = BARS // 2
    second_id = put_batch(redis, clean_db, "BTC/USD", BARS, offset=overlap, level=200.0)
    second = broker.get_batch_tables(redis, second_id)["bars"]
    uri = clean_db.role_url("loader").render_as_string(hide_password=False)
    with adbc.connect(uri) as one, adbc.connect(uri) as two, one.cursor() as a, two.cursor() as b:
        prepare_session(a)
        prepare_session(b)
        assert upsert(a, "bars", first, OLAP_COLUMNS, OLAP_KEY, lineage=LINEAGE) == BARS
        b.execute("SELECT pg_backend_pid()")
        (pid,) = b.fetchone()
        with ThreadPoolExecutor(max_workers=1) as pool:
            # The second loader's keys overlap the first's uncommitted rows: it must wait for the
            # first to commit, then update the overlap (not fail on the primary key).
            later = pool.submit(upsert, b, "bars", second, OLAP_COLUMNS, OLAP_KEY, lineage=LINEAGE)
            wait_until_blocked(clean_db, pid)
            one.commit()
            assert later.result(timeout=60) == BARS  # half new, half changed
        two.commit()
    rows = stored(clean_db)
    assert len(rows) == BARS + overlap
    closes = dict(zip(second["bar_time"].to_pylist(), second["close"].to_pylist(), strict=True))
    conn = psycopg2.connect(clean_db.database_url)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT bar_time, close FROM marketpipe.bars WHERE bar_time >= %s", (min(closes),)
        )
        assert dict(cur.fetchall()) == closes  # the overlap holds the later loader's values
    conn.close()


# Values around a stored one: within and beyond the tolerance, either way, NULL on either side.
AGREEMENT_COLUMNS = (
    ("symbol", "text"),
    ("bar_time", "timestamptz"),
    ("close", "double precision"),
    ("macd", "double precision"),
    ("pct_change", "double precision"),
    ("instrument_name", "text"),
)
_OFFSETS = (0.0, 0.4, -0.4, 0.9, 1.1, -1.1, 3.0, 1e6)
NAMES = st.sampled_from(["Name", "Renamed", None])


@st.composite
def value_pairs(draw: st.DrawFn) -> tuple[float | None, float | None]:
    old = draw(st.one_of(st.none(), st.sampled_from([0.0, 1e-6, 0.37, -2.5, 2_500.0, 6.4e4])))
    if old is None or draw(st.booleans()) is False:
        new = draw(st.one_of(st.none(), st.floats(-1e5, 1e5, allow_subnormal=False)))
    else:
        new = old + draw(st.sampled_from(_OFFSETS)) * RELATIVE_TOLERANCE * max(abs(old), 1.0)
    return old, new


@given(
    rows=st.lists(
        st.tuples(value_pairs(), value_pairs(), value_pairs(), st.tuples(NAMES, NAMES)),
        min_size=1,
        max_size=30,
    )
)
# The cases the rules could part on, always run: MACD near zero moved by more than 1e-12 of itself
# but less than 1e-12 of the close (unchanged only on the close's scale), a value and a text
# turning NULL.
@example(
    rows=[
        ((2_500.0, 2_500.0), (1e-6, 1e-6 + 1.1e-12), (0.37, 0.37), ("Name", "Name")),
        ((2_500.0, 2_500.0), (0.5, None), (0.37, 0.37), ("Name", None)),
    ]
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_arrow_change_rule_agrees_with_the_sql_one(
    clean_db: Settings,
    rows: list[tuple[tuple[Any, Any], ...]],
) -> None:
    times = pa.array(range(len(rows)), pa.int64()).cast(pa.timestamp("us", tz="UTC"))

    def side(index: int) -> pa.Table:
        names = [r[3][index] for r in rows]
        return pa.table(
            {
                "symbol": pa.array(["X"] * len(rows), pa.large_string()),
                "bar_time": times,
                "close": pa.array([r[0][index] for r in rows], pa.float64()),
                "macd": pa.array([r[1][index] for r in rows], pa.float64()),
                "pct_change": pa.array([r[2][index] for r in rows], pa.float64()),
                "instrument_name": pa.array(names, pa.large_string()),
            }
        )

    old, new = side(0), side(1)
    key = ("symbol", "bar_time")
    arrow_rule = changed_rows(old, new, AGREEMENT_COLUMNS, key).to_pylist()
    with adbc_connect(clean_db.role_url("loader")) as conn, conn.cursor() as cur:
        prepare_session(cur)
        stored_rows, batch_rows = stage(cur, "old", old), stage(cur, "new", new)
        rule = changed_condition(AGREEMENT_COLUMNS, key, "s", priced=True)
        cur.execute(
            f"SELECT {rule} FROM {stored_rows} t JOIN {batch_rows} s USING (bar_time)"
            " ORDER BY bar_time"
        )
        sql_rule = [bool(v) for v in cur.fetch_arrow_table().column(0).to_pylist()]
        conn.rollback()
    assert arrow_rule == sql_rule


def test_upsert_known_refuses_rows_of_two_series(clean_db: Settings, loaded: pa.Table) -> None:
    other = loaded.set_column(
        loaded.schema.get_field_index("symbol"),
        "symbol",
        pa.array(["ETH/USD"] + ["BTC/USD"] * (BARS - 1), pa.large_string()),
    )
    before = stored(clean_db)
    with pytest.raises(ValueError, match="one series"):
        upsert_bars(clean_db, other, "known")
    assert stored(clean_db) == before
