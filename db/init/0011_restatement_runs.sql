-- A run log row per restatement (issue 17): the fetcher writes 'running' when it starts the
-- re-fetch (kind, symbol, interval, windows, credits), the loader 'ok' in the swap's own
-- transaction (rows replaced in rows_loaded, rows no longer served in rows_removed).
ALTER TABLE marketpipe.pipeline_runs
    ADD COLUMN IF NOT EXISTS windows integer,
    ADD COLUMN IF NOT EXISTS rows_removed integer;

ALTER TABLE marketpipe.pipeline_runs DROP CONSTRAINT IF EXISTS pipeline_runs_status_check;
ALTER TABLE marketpipe.pipeline_runs ADD CONSTRAINT pipeline_runs_status_check
    CHECK (status IN ('ok', 'partial', 'failed', 'no_data', 'skipped', 'running'));

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (11, 'restatement_runs') ON CONFLICT (version) DO NOTHING;
