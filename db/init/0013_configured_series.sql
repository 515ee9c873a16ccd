-- Adding a symbol is one step (issue 13): the fetcher keeps here every (symbol, interval) it has
-- been configured to fetch. A series new to SYMBOLS x INTERVALS is backfilled to BACKFILL_SINCE
-- automatically (windows_done / windows_total: the health page's progress); a series no longer
-- configured turns 'inactive' (no longer fetched; its bars are kept, shown as inactive).
CREATE TABLE IF NOT EXISTS marketpipe.configured_series (
    symbol           text        NOT NULL,
    interval         text        NOT NULL,
    status           text        NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'inactive')),
    configured_at    timestamptz NOT NULL DEFAULT now(),
    removed_at       timestamptz,
    -- The automatic backfill: none asked (NULL since), running, done or failed (message says).
    backfill_since   date,
    backfill_status  text        CHECK (backfill_status IN ('running', 'done', 'failed')),
    windows_done     integer     NOT NULL DEFAULT 0,
    windows_total    integer     NOT NULL DEFAULT 0,
    backfill_message text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval)
);

GRANT SELECT, INSERT, UPDATE ON marketpipe.configured_series TO marketpipe_fetcher;
GRANT SELECT ON marketpipe.configured_series TO marketpipe_analyst;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (13, 'configured_series') ON CONFLICT (version) DO NOTHING;
