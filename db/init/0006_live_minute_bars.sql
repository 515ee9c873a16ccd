-- Live prices: one-minute OHLC built by the streamer from WebSocket ticks, kept for
-- LIVE_RETENTION_DAYS. A table of its own, never marketpipe.bars: the hourly API pipeline stays
-- the source of truth for bars, so a live minute bar can never overwrite an API bar.
-- The streamer writes through marketpipe_streamer (this table only, nothing else); analysts and
-- the dashboard read it through marketpipe_analyst; the loader's role gets nothing here.
-- Its login password is set by `marketpipe-migrate` from STREAMER_DB_PASSWORD.

CREATE TABLE IF NOT EXISTS marketpipe.live_minute_bars (
    symbol         text NOT NULL,
    minute         timestamptz NOT NULL CHECK (date_trunc('minute', minute) = minute),
    open           double precision NOT NULL CHECK (open > 0),
    high           double precision NOT NULL,
    low            double precision NOT NULL CHECK (low > 0),
    close          double precision NOT NULL,
    ticks          integer NOT NULL CHECK (ticks > 0),
    day_volume     double precision,
    first_tick_at  timestamptz NOT NULL,
    last_tick_at   timestamptz NOT NULL,
    -- derived from the stream, not from the API: not a vendor bar, never restated
    source         text NOT NULL DEFAULT 'stream' CHECK (source = 'stream'),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, minute),
    CHECK (low <= least(open, close) AND high >= greatest(open, close)),
    CHECK (first_tick_at <= last_tick_at)
);
-- Retention deletes and "every symbol over the last hours" read by minute.
CREATE INDEX IF NOT EXISTS live_minute_bars_minute_idx ON marketpipe.live_minute_bars (minute);
COMMENT ON TABLE marketpipe.live_minute_bars IS
    'One-minute OHLC derived from the real-time price stream (source = stream); not API bars.';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marketpipe_streamer') THEN
        CREATE ROLE marketpipe_streamer LOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- another database of this cluster created it concurrently: it exists, which is the goal
    NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO marketpipe_streamer', current_database());
END
$$;

GRANT USAGE ON SCHEMA marketpipe TO marketpipe_streamer;
GRANT SELECT, INSERT, UPDATE, DELETE ON marketpipe.live_minute_bars TO marketpipe_streamer;
GRANT SELECT ON marketpipe.live_minute_bars TO marketpipe_analyst;
-- 0002's default privileges gave the loader's writer role SELECT/INSERT/UPDATE on new tables.
REVOKE ALL ON marketpipe.live_minute_bars FROM marketpipe_writer;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (6, 'live_minute_bars') ON CONFLICT (version) DO NOTHING;
