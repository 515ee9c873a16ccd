-- Key figures of an instrument, defined once (issue 14): the quote screen of latest_quotes with
-- the newest bar's stored ATR 14, volatility 20 (annualised, docs/indicators.md) and session
-- VWAP, and the latest trading day's range so far. The dashboard's key-figures strip reads this
-- view; analysts may too.
--
-- The day range is over the bars of the newest bar's trading day (stocks: the exchange's
-- session date; crypto and forex: the UTC date), bounded to the 24 hours before that bar so it
-- is one short range scan of the primary key per series.
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
       day.day_low,
       day.day_high,
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
LEFT JOIN LATERAL (
    SELECT min(d.low) AS day_low, max(d.high) AS day_high FROM marketpipe.bars d
    WHERE d.symbol = q.symbol AND d.interval = q.interval
      AND d.bar_time > q.bar_time - interval '24 hours' AND d.bar_time <= q.bar_time
      AND d.trading_date = q.trading_date
) day ON true;

GRANT SELECT ON marketpipe.key_figures TO marketpipe_analyst;
REVOKE ALL ON marketpipe.key_figures FROM marketpipe_writer;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (12, 'key_figures') ON CONFLICT (version) DO NOTHING;
