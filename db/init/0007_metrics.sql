-- One truth for every number: daily bars with their indicators, and the metrics analysts and the
-- dashboard share (definitions: docs/indicators.md, "Metrics").
--
-- daily_bars are rebuilt by the loader, in the transaction that stores the bars, from the stored
-- bars of ONE source interval (marketpipe.market.DAILY_SOURCE_INTERVAL, '1h'): loading another
-- interval never rebuilds a day, and warm-up bars that were never stored never make one. The
-- indicator columns are computed over the stored daily series by the same code as the hourly
-- ones (marketpipe/indicators.py), so they do not depend on what one payload reached back to.

ALTER TABLE marketpipe.daily_bars
    ADD COLUMN IF NOT EXISTS source_interval text NOT NULL DEFAULT '1h',
    ADD COLUMN IF NOT EXISTS previous_close double precision,
    ADD COLUMN IF NOT EXISTS sma_20 double precision,
    ADD COLUMN IF NOT EXISTS sma_50 double precision,
    ADD COLUMN IF NOT EXISTS sma_200 double precision,
    ADD COLUMN IF NOT EXISTS ema_12 double precision,
    ADD COLUMN IF NOT EXISTS ema_26 double precision,
    ADD COLUMN IF NOT EXISTS macd double precision,
    ADD COLUMN IF NOT EXISTS macd_signal double precision,
    ADD COLUMN IF NOT EXISTS macd_hist double precision,
    ADD COLUMN IF NOT EXISTS rsi_14 double precision,
    ADD COLUMN IF NOT EXISTS bb_middle double precision,
    ADD COLUMN IF NOT EXISTS bb_upper double precision,
    ADD COLUMN IF NOT EXISTS bb_lower double precision,
    ADD COLUMN IF NOT EXISTS atr_14 double precision,
    ADD COLUMN IF NOT EXISTS high_52w double precision,
    ADD COLUMN IF NOT EXISTS low_52w double precision;

-- Quoted precision: the decimals a price of this instrument is quoted with. Stocks and forex
-- quote a fixed number of decimals (2 for stocks, 5 for forex pairs); crypto prices span
-- 0.00001 to 100000, so they keep 6 significant digits (at least 2 decimals). Tables keep full
-- precision; the analyst views and the dashboard present prices and changes through this.
CREATE OR REPLACE FUNCTION marketpipe.price_decimals(p_asset_class text, p_price double precision)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN p_asset_class = 'stock' THEN 2
        WHEN p_asset_class = 'forex' THEN 5
        WHEN p_price IS NULL OR p_price = 0 THEN 2
        ELSE greatest(2, 6 - 1 - floor(log(abs(p_price)::numeric))::integer)
    END
$$;

CREATE OR REPLACE FUNCTION marketpipe.quoted(
    p_asset_class text, p_reference double precision, p_value double precision
)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT round(p_value::numeric, marketpipe.price_decimals(p_asset_class, p_reference))
$$;

-- The period return: the close at the end (the last close at or before p_end) against the last
-- close at or before p_start, in percent; the same rule for every asset class. NULL when the
-- series has no bar at or before p_start (its history begins inside the window).
CREATE OR REPLACE FUNCTION marketpipe.period_returns(
    p_start timestamptz, p_end timestamptz, p_interval text DEFAULT '1h'
)
RETURNS TABLE (
    symbol text,
    start_time timestamptz,
    start_close double precision,
    end_time timestamptz,
    end_close double precision,
    return_pct double precision
)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT q.symbol, s.bar_time, s.close, e.bar_time, e.close,
           100 * (e.close / NULLIF(s.close, 0) - 1)
    FROM marketpipe.latest_quotes q
    CROSS JOIN LATERAL (
        SELECT b.bar_time, b.close FROM marketpipe.bars b
        WHERE b.symbol = q.symbol AND b.interval = p_interval AND b.bar_time <= p_end
        ORDER BY b.bar_time DESC LIMIT 1
    ) e
    LEFT JOIN LATERAL (
        SELECT b.bar_time, b.close FROM marketpipe.bars b
        WHERE b.symbol = q.symbol AND b.interval = p_interval AND b.bar_time <= p_start
        ORDER BY b.bar_time DESC LIMIT 1
    ) s ON true
    WHERE q.interval = p_interval
    ORDER BY q.symbol
$$;

CREATE OR REPLACE FUNCTION marketpipe.period_return(
    p_symbol text, p_start timestamptz, p_end timestamptz, p_interval text DEFAULT '1h'
)
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT 100 * (e.close / NULLIF(s.close, 0) - 1)
    FROM (
        SELECT b.close FROM marketpipe.bars b
        WHERE b.symbol = p_symbol AND b.interval = p_interval AND b.bar_time <= p_end
        ORDER BY b.bar_time DESC LIMIT 1
    ) e
    CROSS JOIN (
        SELECT b.close FROM marketpipe.bars b
        WHERE b.symbol = p_symbol AND b.interval = p_interval AND b.bar_time <= p_start
        ORDER BY b.bar_time DESC LIMIT 1
    ) s
$$;

-- Rebased to 100 at the period return's reference (the last close at or before p_from), so the
-- chart's last point is 100 + period_return(p_from, p_to). The reference bar is the first row of
-- each symbol, then its bars in (p_from, p_to]; a symbol whose history begins inside the window
-- has no reference and no rows (its period return is NULL too). One range scan of the covering
-- index plus one backward probe of the primary key per symbol.
CREATE OR REPLACE FUNCTION marketpipe.rebased(
    p_from timestamptz, p_to timestamptz, p_interval text DEFAULT '1h'
)
RETURNS TABLE (symbol text, bar_time timestamptz, close double precision, rebased double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH in_range AS (
        SELECT b.symbol, b.bar_time, b.close FROM marketpipe.bars b
        WHERE b.interval = p_interval AND b.bar_time > p_from AND b.bar_time <= p_to
    ), reference AS (
        SELECT s.symbol, r.bar_time, r.close
        FROM (SELECT DISTINCT in_range.symbol FROM in_range) s
        CROSS JOIN LATERAL (
            SELECT b.bar_time, b.close FROM marketpipe.bars b
            WHERE b.symbol = s.symbol AND b.interval = p_interval AND b.bar_time <= p_from
            ORDER BY b.bar_time DESC LIMIT 1
        ) r
    )
    SELECT p.symbol, p.bar_time, p.close, 100 * p.close / NULLIF(ref.close, 0)
    FROM (SELECT * FROM reference UNION ALL SELECT * FROM in_range) p
    JOIN reference ref ON ref.symbol = p.symbol
    ORDER BY p.symbol, p.bar_time
$$;

-- The quote screen per series. The day's change is against the previous session's close for
-- stocks (the last bar of the previous trading day) and, for crypto and forex, which have no
-- session, against the close 24 hours before the latest bar. The 52-week range is the latest
-- stored daily row's; the average volume is over the 20 sessions before the latest day.
-- New columns go at the end: CREATE OR REPLACE VIEW may only add columns.
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
SELECT latest.*,
       ref.close AS reference_close,
       CASE WHEN latest.asset_class = 'stock' THEN 'previous session close'
            ELSE '24 hours' END AS reference,
       latest.close - ref.close AS day_change,
       100 * (latest.close / NULLIF(ref.close, 0) - 1) AS day_pct_change,
       year.high_52w,
       year.low_52w,
       vol.avg_volume_20d
FROM series s
CROSS JOIN LATERAL (
    SELECT b.symbol, b.interval, b.bar_time, b.trading_date, b.asset_class, b.instrument_name,
           b.exchange, b.currency, b.open, b.high, b.low, b.close, b.volume, b.previous_close,
           b.change, b.pct_change, b.sma_20, b.sma_50, b.sma_200, b.rsi_14, b.is_complete,
           b.loaded_at, b.exchange_timezone
    FROM marketpipe.bars b
    WHERE b.symbol = s.symbol AND b.interval = s.interval
    ORDER BY b.bar_time DESC LIMIT 1
) latest
LEFT JOIN LATERAL (
    SELECT b.close FROM marketpipe.bars b
    WHERE b.symbol = latest.symbol AND b.interval = latest.interval
      AND CASE WHEN latest.asset_class = 'stock' THEN b.trading_date < latest.trading_date
               ELSE b.bar_time <= latest.bar_time - interval '24 hours' END
    ORDER BY b.bar_time DESC LIMIT 1
) ref ON true
LEFT JOIN LATERAL (
    SELECT d.high_52w, d.low_52w FROM marketpipe.daily_bars d
    WHERE d.symbol = latest.symbol ORDER BY d.trading_date DESC LIMIT 1
) year ON true
LEFT JOIN LATERAL (
    SELECT avg(v.volume) AS avg_volume_20d FROM (
        SELECT d.volume FROM marketpipe.daily_bars d
        WHERE d.symbol = latest.symbol AND d.trading_date < latest.trading_date
        ORDER BY d.trading_date DESC LIMIT 20
    ) v
) vol ON true;

-- Analysts' quote screen at the instrument's quoted precision (latest_quotes keeps full
-- precision): prices and the day's change rounded by price_decimals, percentages to 2 decimals.
CREATE OR REPLACE VIEW marketpipe.quotes_display AS
SELECT q.symbol, q.interval, q.bar_time, q.exchange_timezone, q.asset_class, q.instrument_name,
       q.currency,
       marketpipe.quoted(q.asset_class, q.close, q.close) AS close,
       marketpipe.quoted(q.asset_class, q.close, q.reference_close) AS reference_close,
       q.reference,
       marketpipe.quoted(q.asset_class, q.close, q.day_change) AS day_change,
       round(q.day_pct_change::numeric, 2) AS day_pct_change,
       marketpipe.quoted(q.asset_class, q.close, q.high_52w) AS high_52w,
       marketpipe.quoted(q.asset_class, q.close, q.low_52w) AS low_52w,
       round(q.avg_volume_20d::numeric, 0) AS avg_volume_20d,
       q.is_complete
FROM marketpipe.latest_quotes q;

REVOKE ALL ON FUNCTION marketpipe.period_returns(timestamptz, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION marketpipe.period_return(text, timestamptz, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION marketpipe.price_decimals(text, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION marketpipe.quoted(text, double precision, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    marketpipe.period_returns(timestamptz, timestamptz, text),
    marketpipe.period_return(text, timestamptz, timestamptz, text),
    marketpipe.price_decimals(text, double precision),
    marketpipe.quoted(text, double precision, double precision),
    marketpipe.rebased(timestamptz, timestamptz, text)
TO marketpipe_analyst;
GRANT SELECT ON marketpipe.latest_quotes, marketpipe.quotes_display TO marketpipe_analyst;
REVOKE ALL ON marketpipe.latest_quotes, marketpipe.quotes_display FROM marketpipe_writer;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (7, 'metrics') ON CONFLICT (version) DO NOTHING;
