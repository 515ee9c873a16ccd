"""marketpipe.db on real PostgreSQL: pooled transactions and times bound as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from marketpipe.db import adbc_connect, transaction, utc_text
from marketpipe.settings import Settings


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 3, 8, 7, 30, 15, 123456, tzinfo=UTC),
        datetime(2026, 3, 8, 12, 30, tzinfo=timezone(timedelta(hours=5))),
        datetime(2026, 11, 1, 1, 30),  # naive: UTC, as ADBC binds one
    ],
)
def test_a_time_bound_as_text_is_the_instant_adbc_binds(
    clean_db: Settings, moment: datetime
) -> None:
    with adbc_connect(clean_db.admin_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT $1::timestamptz", (moment,))
        (as_datetime,) = cur.fetchone()
        cur.execute("SELECT $1::timestamptz", (utc_text(moment),))
        (as_text,) = cur.fetchone()
        conn.rollback()
    assert as_text == as_datetime
    assert utc_text(None) is None


def test_transactions_share_a_pooled_connection_and_roll_back_on_error(
    clean_db: Settings,
) -> None:
    with transaction(clean_db.admin_url) as cur:
        cur.execute("CREATE TABLE public.pool_probe (n integer)")
        cur.execute("SELECT pg_backend_pid()")
        (first_pid,) = cur.fetchone()
    with pytest.raises(ZeroDivisionError), transaction(clean_db.admin_url) as cur:
        cur.execute("INSERT INTO public.pool_probe VALUES (1)")
        _ = 1 / 0
    with transaction(clean_db.admin_url) as cur:
        cur.execute("SELECT pg_backend_pid(), count(*) FROM public.pool_probe")
        pid, rows = cur.fetchone()
        cur.execute("DROP TABLE public.pool_probe")
    assert rows == 0  # the failed transaction left nothing
    assert pid == first_pid  # the same server session: no new connection per transaction
