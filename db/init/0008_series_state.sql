-- Ticks that cost what is new (issue 18): the fetcher asks a series with history only for the
-- bars after its watermark plus a small overlap, and the transformer continues every indicator
-- from the stored series instead of re-deriving it from a year of re-fetched warm-up.
--
-- What a continuation needs that bars did not hold: RSI's Wilder averages of gains and losses
-- (the RSI alone does not determine them). EMA 12/26, the MACD signal and ATR 14 are their own
-- state; windows (SMA, Bollinger, volatility, 52 weeks) are refilled from the stored closes,
-- highs and lows.
ALTER TABLE marketpipe.bars
    ADD COLUMN IF NOT EXISTS rsi_avg_gain double precision,
    ADD COLUMN IF NOT EXISTS rsi_avg_loss double precision;

-- A counter per series, raised by every load that writes its bars. The transformer reads it
-- with the stored state it continues from; the loader compares it under the series' lock, and
-- recomputes the batch's stretch from the stored series when another load came in between.
CREATE TABLE IF NOT EXISTS marketpipe.series_versions (
    symbol      text NOT NULL,
    interval    text NOT NULL,
    version     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval)
);

-- Least privilege: the transformer reads the stored series and its version, and writes nothing.
GRANT SELECT ON marketpipe.bars, marketpipe.series_versions TO marketpipe_transformer;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (8, 'series_state') ON CONFLICT (version) DO NOTHING;
