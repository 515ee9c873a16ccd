-- A run log of everything (issue 17): beside the loader's row per payload, the fetcher writes a
-- row per fetch cycle ('fetcher') and per backfill window ('backfill'): symbols asked, how many
-- had new data, credits spent, seconds waited for credits, API errors. NULL on loader rows.
ALTER TABLE marketpipe.pipeline_runs
    ADD COLUMN IF NOT EXISTS symbols_asked integer,
    ADD COLUMN IF NOT EXISTS symbols_new integer,
    ADD COLUMN IF NOT EXISTS credits integer,
    ADD COLUMN IF NOT EXISTS waited_seconds double precision,
    ADD COLUMN IF NOT EXISTS api_errors integer;

-- 'skipped': a scheduled tick that did not run on its own (the fetcher was down; the next
-- tick's catch-up fetched its bars).
ALTER TABLE marketpipe.pipeline_runs DROP CONSTRAINT IF EXISTS pipeline_runs_status_check;
ALTER TABLE marketpipe.pipeline_runs ADD CONSTRAINT pipeline_runs_status_check
    CHECK (status IN ('ok', 'partial', 'failed', 'no_data', 'skipped'));

-- "the last fetch cycles" (health page, ops status) without scanning every load row.
CREATE INDEX IF NOT EXISTS pipeline_runs_component_idx
    ON marketpipe.pipeline_runs (component, finished_at);

-- The fetcher writes its own rows (an upsert: a tick run again after a failure records the new
-- outcome) and reads the loader's (`backfill --wait` returns when its payloads are loaded).
GRANT SELECT, INSERT, UPDATE ON marketpipe.pipeline_runs TO marketpipe_fetcher;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (10, 'run_log') ON CONFLICT (version) DO NOTHING;
