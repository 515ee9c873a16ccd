-- Key figures of an instrument, defined once (issue 14): the quote screen of latest_quotes with
-- the newest bar's stored ATR 14, volatility 20 (annualised, docs/indicators.md) and session
-- VWAP, and the latest trading day's range so far. The dashboard's key-figures strip reads this
-- view; analysts may too.
--
-- The day range is the newest bar's trading day in daily_bars (stocks: the exchange's session
-- date; crypto and forex: the UTC date), which the loader rebuilds with every load, the still
-- open day included: one probe of its primary key.
CREATE OR REPLACE VIEW marketpipe.key_figures AS
SELECT q.symbol,
       q.interval,
       q.asset_class,
       q.currency,
       q.exchange_timezone,
       q.bar_time,
       q.trading_date,
       q.close,
       q.reference,
       q.reference_close AS previous_close,
       q.day_change,
       q.day_pct_change,
       day.low AS day_low,
       day.high AS day_high,
       q.low_52w,
       q.high_52w,
       b.atr_14,
       b.volatility_20,
       b.vwap_session,
       q.avg_volume_20d,
       marketpipe.price_decimals(q.asset_class, q.close) AS price_decimals
FROM marketpipe.latest_quotes q
JOIN marketpipe.bars b
  ON b.symbol = q.symbol AND b.interval = q.interval AND b.bar_time = q.bar_time
LEFT JOIN marketpipe.daily_bars day
  ON day.symbol = q.symbol AND day.trading_date = q.trading_date;

-- rebased() for chosen symbols: the same definition (100 at the last close at or before p_from,
-- then the bars in (p_from, p_to]), reading only their bars: one backward probe and one range
-- scan of the primary key per symbol, where rebased(p_from, p_to, p_interval) reads every
-- symbol's bars of the window (2.6 s for a year of 50 symbols at 10 M bars).
CREATE OR REPLACE FUNCTION marketpipe.rebased(
    p_from timestamptz, p_to timestamptz, p_interval text, p_symbols text[]
)
RETURNS TABLE (symbol text, bar_time timestamptz, close double precision, rebased double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH reference AS (
        SELECT s.symbol, r.bar_time, r.close
        FROM unnest(p_symbols) AS s(symbol)
        CROSS JOIN LATERAL (
            SELECT b.bar_time, b.close FROM marketpipe.bars b
            WHERE b.symbol = s.symbol AND b.interval = p_interval AND b.bar_time <= p_from
            ORDER BY b.bar_time DESC LIMIT 1
        ) r
        WHERE EXISTS (
            SELECT 1 FROM marketpipe.bars b
            WHERE b.symbol = s.symbol AND b.interval = p_interval
              AND b.bar_time > p_from AND b.bar_time <= p_to
        )
    )
    SELECT ref.symbol, ref.bar_time, ref.close, 100 * ref.close / NULLIF(ref.close, 0)
    FROM reference ref
    UNION ALL
    SELECT ref.symbol, b.bar_time, b.close, 100 * b.close / NULLIF(ref.close, 0)
    FROM reference ref
    CROSS JOIN LATERAL (
        SELECT b.bar_time, b.close FROM marketpipe.bars b
        WHERE b.symbol = ref.symbol AND b.interval = p_interval
          AND b.bar_time > p_from AND b.bar_time <= p_to
        OFFSET 0  -- a fence: one primary-key range scan per symbol, never a scan of the table
    ) b
    ORDER BY 1, 2
$$;

-- The same, one point per trading day for long windows: the reference as above, then each
-- trading day's close (daily_bars: the day's last stored bar) after the reference's trading
-- day through p_to's UTC date. Ending at the newest bar, the last point is 100 + period_return.
CREATE OR REPLACE FUNCTION marketpipe.rebased_daily(
    p_from timestamptz, p_to timestamptz, p_interval text, p_symbols text[]
)
RETURNS TABLE (symbol text, trading_date date, close double precision, rebased double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH reference AS (
        SELECT s.symbol, r.trading_date, r.close
        FROM unnest(p_symbols) AS s(symbol)
        CROSS JOIN LATERAL (
            SELECT b.trading_date, b.close FROM marketpipe.bars b
            WHERE b.symbol = s.symbol AND b.interval = p_interval AND b.bar_time <= p_from
            ORDER BY b.bar_time DESC LIMIT 1
        ) r
    )
    SELECT ref.symbol, ref.trading_date, ref.close, 100 * ref.close / NULLIF(ref.close, 0)
    FROM reference ref
    UNION ALL
    SELECT ref.symbol, d.trading_date, d.close, 100 * d.close / NULLIF(ref.close, 0)
    FROM reference ref
    CROSS JOIN LATERAL (
        SELECT d.trading_date, d.close FROM marketpipe.daily_bars d
        WHERE d.symbol = ref.symbol AND d.trading_date > ref.trading_date
          AND d.trading_date <= (p_to AT TIME ZONE 'UTC')::date
        OFFSET 0  -- a fence: one primary-key range scan per symbol, never a scan of the table
    ) d
    ORDER BY 1, 2
$$;

REVOKE ALL ON FUNCTION marketpipe.rebased(timestamptz, timestamptz, text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION marketpipe.rebased_daily(timestamptz, timestamptz, text, text[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    marketpipe.rebased(timestamptz, timestamptz, text, text[]),
    marketpipe.rebased_daily(timestamptz, timestamptz, text, text[])
TO marketpipe_analyst;
GRANT SELECT ON marketpipe.key_figures TO marketpipe_analyst;
REVOKE ALL ON marketpipe.key_figures FROM marketpipe_writer;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (12, 'key_figures') ON CONFLICT (version) DO NOTHING;
