-- Raw first: the fetcher lands every API answer in raw_payloads before it enqueues the
-- transform, and a landed row never changes. Each side gets exactly what it needs:
--   marketpipe_fetcher      INSERT on raw_payloads, SELECT on watermarks ("anything new?");
--   marketpipe_transformer  SELECT on raw_payloads (it reads one payload by id);
--   marketpipe_writer       (the loader) no longer writes raw_payloads at all.
-- Roles are cluster-wide, so they are created only when missing. Login passwords are set by
-- `marketpipe-migrate` from FETCHER_DB_PASSWORD / TRANSFORMER_DB_PASSWORD, never written here.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marketpipe_fetcher') THEN
        CREATE ROLE marketpipe_fetcher LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marketpipe_transformer') THEN
        CREATE ROLE marketpipe_transformer LOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- another database of this cluster created them concurrently: they exist, which is the goal
    NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO marketpipe_fetcher, marketpipe_transformer',
                   current_database());
END
$$;

GRANT USAGE ON SCHEMA marketpipe TO marketpipe_fetcher, marketpipe_transformer;
GRANT INSERT ON marketpipe.raw_payloads TO marketpipe_fetcher;
GRANT SELECT ON marketpipe.watermarks TO marketpipe_fetcher;
GRANT SELECT ON marketpipe.raw_payloads TO marketpipe_transformer;
-- Immutable: the loader's role reads raw_payloads (the run log names its payload) and that is all.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON marketpipe.raw_payloads FROM marketpipe_writer;
REVOKE CREATE ON SCHEMA public FROM marketpipe_fetcher, marketpipe_transformer;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (5, 'raw_first') ON CONFLICT (version) DO NOTHING;
