-- Analysts' entry points: the latest quote per series, daily performance, and every symbol
-- rebased to 100 over a chosen window. Views and the function read only our schema; the analyst
-- role gets SELECT / EXECUTE on exactly these, the writer nothing new.

-- Latest bar of every (symbol, interval). PostgreSQL 15 has no skip scan, so the distinct series
-- are walked through the primary key (one index probe per series, a "loose index scan"), then
-- each series' newest bar is one backward probe of the same index: cheap at any table size.
CREATE OR REPLACE VIEW marketpipe.latest_quotes AS
WITH RECURSIVE series AS (
    (SELECT b.symbol, b.interval FROM marketpipe.bars b ORDER BY b.symbol, b.interval LIMIT 1)
    UNION ALL
    SELECT nxt.symbol, nxt.interval
    FROM series s
    CROSS JOIN LATERAL (
        SELECT b.symbol, b.interval FROM marketpipe.bars b
        WHERE (b.symbol, b.interval) > (s.symbol, s.interval)
        ORDER BY b.symbol, b.interval LIMIT 1
    ) nxt
)
SELECT latest.*
FROM series s
CROSS JOIN LATERAL (
    SELECT b.symbol, b.interval, b.bar_time, b.trading_date, b.asset_class, b.instrument_name,
           b.exchange, b.currency, b.open, b.high, b.low, b.close, b.volume, b.previous_close,
           b.change, b.pct_change, b.sma_20, b.sma_50, b.sma_200, b.rsi_14, b.is_complete,
           b.loaded_at
    FROM marketpipe.bars b
    WHERE b.symbol = s.symbol AND b.interval = s.interval
    ORDER BY b.bar_time DESC LIMIT 1
) latest;

-- One row per symbol and trading day with multi-day returns. The windows partition by symbol,
-- so a filter on symbol is applied before them; a filter on trading_date is applied after them
-- (lag() still sees the earlier days, so the first rows of a range are not NULL).
CREATE OR REPLACE VIEW marketpipe.daily_performance AS
SELECT d.symbol, d.trading_date, d.asset_class, d.open, d.high, d.low, d.close, d.volume, d.vwap,
       d.change, d.pct_change,
       100 * (d.close / NULLIF(lag(d.close, 5) OVER w, 0) - 1) AS pct_change_5d,
       100 * (d.close / NULLIF(lag(d.close, 20) OVER w, 0) - 1) AS pct_change_20d,
       d.range,
       100 * d.range / NULLIF(d.open, 0) AS range_pct,
       d.bar_count, d.is_complete
FROM marketpipe.daily_bars d
WINDOW w AS (PARTITION BY d.symbol ORDER BY d.trading_date);

-- All symbols over a range of days (the primary key leads with symbol).
CREATE INDEX IF NOT EXISTS daily_bars_date_idx ON marketpipe.daily_bars (trading_date);

-- Comparison: each symbol's close rebased to 100 at its first bar in [p_from, p_to). A view
-- cannot take the window, and filtering a view with first_value() over all history would rebase
-- to the first bar ever stored, so this is a set-returning SQL function. It is STABLE and a
-- single SELECT, so the planner inlines it and the range is served by bars_interval_time_idx.
CREATE OR REPLACE FUNCTION marketpipe.rebased(
    p_from timestamptz, p_to timestamptz, p_interval text DEFAULT '1h'
)
RETURNS TABLE (symbol text, bar_time timestamptz, close double precision, rebased double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT b.symbol, b.bar_time, b.close,
           100 * b.close / NULLIF(first_value(b.close) OVER (
               PARTITION BY b.symbol ORDER BY b.bar_time), 0)
    FROM marketpipe.bars b
    WHERE b.interval = p_interval AND b.bar_time >= p_from AND b.bar_time < p_to
    ORDER BY b.symbol, b.bar_time
$$;

-- Functions are executable by PUBLIC unless revoked; ours only by the analysts (and dashboard).
REVOKE ALL ON FUNCTION marketpipe.rebased(timestamptz, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION marketpipe.rebased(timestamptz, timestamptz, text) TO marketpipe_analyst;
GRANT SELECT ON marketpipe.latest_quotes, marketpipe.daily_performance TO marketpipe_analyst;
-- The default privileges of 0002 give the writer INSERT/UPDATE on every new relation; the loader
-- writes tables, never views.
REVOKE ALL ON marketpipe.latest_quotes, marketpipe.daily_performance FROM marketpipe_writer;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (3, 'analyst_views') ON CONFLICT (version) DO NOTHING;
