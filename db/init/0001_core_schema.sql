-- marketpipe core schema: lives in its own schema beside Pagila's `public`, never touching it.
-- Every migration is idempotent (safe under docker-entrypoint-initdb.d AND `marketpipe-migrate`)
-- and records its own version, so both paths end with the same catalog.

CREATE SCHEMA IF NOT EXISTS marketpipe;

CREATE TABLE IF NOT EXISTS marketpipe.schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Landing table: every API answer exactly as received, one row per symbol and fetch.
CREATE TABLE IF NOT EXISTS marketpipe.raw_payloads (
    payload_id  text PRIMARY KEY,
    source      text NOT NULL CHECK (source IN ('demo', 'twelvedata')),
    endpoint    text NOT NULL,
    symbol      text NOT NULL,
    interval    text NOT NULL,
    fetched_at  timestamptz NOT NULL,
    request     jsonb NOT NULL,
    body        jsonb NOT NULL,
    instrument  jsonb NOT NULL DEFAULT '{}'::jsonb,
    loaded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS raw_payloads_symbol_fetched_idx
    ON marketpipe.raw_payloads (symbol, interval, fetched_at);

-- The denormalized OLAP table: one flat row per instrument, interval and bar (UTC open time).
CREATE TABLE IF NOT EXISTS marketpipe.bars (
    symbol               text NOT NULL,
    interval             text NOT NULL,
    bar_time             timestamptz NOT NULL,
    bar_time_local       timestamp,
    exchange_timezone    text,
    trading_date         date,
    asset_class          text NOT NULL CHECK (asset_class IN ('stock', 'crypto', 'forex')),
    instrument_name      text,
    instrument_type      text,
    exchange             text,
    mic_code             text,
    currency             text,
    currency_base        text,
    currency_quote       text,
    country              text,
    open                 double precision NOT NULL,
    high                 double precision NOT NULL,
    low                  double precision NOT NULL,
    close                double precision NOT NULL,
    volume               double precision,
    previous_close       double precision,
    change               double precision,
    pct_change           double precision,
    log_return           double precision,
    sma_20               double precision,
    sma_50               double precision,
    sma_200              double precision,
    ema_12               double precision,
    ema_26               double precision,
    macd                 double precision,
    macd_signal          double precision,
    macd_hist            double precision,
    rsi_14               double precision,
    bb_middle            double precision,
    bb_upper             double precision,
    bb_lower             double precision,
    atr_14               double precision,
    volatility_20        double precision,
    vwap_session         double precision,
    high_52w             double precision,
    low_52w              double precision,
    pct_from_52w_high    double precision,
    pct_from_52w_low     double precision,
    is_complete          boolean NOT NULL,
    payload_id           text NOT NULL,
    transformed_at       timestamptz NOT NULL,
    loaded_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval, bar_time)
);
-- All symbols over a time range (the comparison views); the primary key serves one symbol.
CREATE INDEX IF NOT EXISTS bars_interval_time_idx ON marketpipe.bars (interval, bar_time);

CREATE TABLE IF NOT EXISTS marketpipe.daily_bars (
    symbol               text NOT NULL,
    trading_date         date NOT NULL,
    asset_class          text NOT NULL CHECK (asset_class IN ('stock', 'crypto', 'forex')),
    open                 double precision NOT NULL,
    high                 double precision NOT NULL,
    low                  double precision NOT NULL,
    close                double precision NOT NULL,
    volume               double precision,
    vwap                 double precision,
    change               double precision,
    pct_change           double precision,
    range                double precision,
    bar_count            integer NOT NULL,
    is_complete          boolean NOT NULL,
    payload_id           text NOT NULL,
    transformed_at       timestamptz NOT NULL,
    loaded_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, trading_date)
);

-- Whatever could not become a row, with the reason and the payload it came from.
CREATE TABLE IF NOT EXISTS marketpipe.quarantine (
    payload_id      text NOT NULL,
    symbol          text,
    interval        text,
    row_key         text NOT NULL,
    reason          text NOT NULL,
    raw             jsonb,
    quarantined_at  timestamptz NOT NULL,
    PRIMARY KEY (payload_id, row_key, reason)
);
CREATE INDEX IF NOT EXISTS quarantine_time_idx ON marketpipe.quarantine (quarantined_at);

-- One entry per pipeline step that did something (or failed to), keyed so replays add nothing.
CREATE TABLE IF NOT EXISTS marketpipe.pipeline_runs (
    run_id            text PRIMARY KEY,
    component         text NOT NULL,
    status            text NOT NULL CHECK (status IN ('ok', 'partial', 'failed', 'no_data')),
    symbol            text,
    interval          text,
    payload_id        text,
    rows_in           integer NOT NULL DEFAULT 0,
    rows_loaded       integer NOT NULL DEFAULT 0,
    rows_quarantined  integer NOT NULL DEFAULT 0,
    message           text,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS pipeline_runs_finished_idx ON marketpipe.pipeline_runs (finished_at);

-- The last complete bar stored per series: the fetcher's "is there anything new?".
CREATE TABLE IF NOT EXISTS marketpipe.watermarks (
    symbol             text NOT NULL,
    interval           text NOT NULL,
    last_complete_bar  timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval)
);

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (1, 'core_schema') ON CONFLICT (version) DO NOTHING;
