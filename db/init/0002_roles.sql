-- Least privilege: the loader writes through marketpipe_writer; the dashboard and analysts read
-- through marketpipe_analyst (SELECT on our schema only, nothing in Pagila's `public`).
-- Roles are cluster-wide, so they are created only when missing. Login passwords are set by
-- `marketpipe-migrate` from LOADER_DB_PASSWORD / READER_DB_PASSWORD, never written here.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marketpipe_writer') THEN
        CREATE ROLE marketpipe_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marketpipe_analyst') THEN
        CREATE ROLE marketpipe_analyst NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marketpipe_loader') THEN
        CREATE ROLE marketpipe_loader LOGIN IN ROLE marketpipe_writer;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marketpipe_reader') THEN
        CREATE ROLE marketpipe_reader LOGIN IN ROLE marketpipe_analyst;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- another database of this cluster created them concurrently: they exist, which is the goal
    NULL;
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO marketpipe_writer', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO marketpipe_analyst', current_database());
END
$$;

GRANT USAGE ON SCHEMA marketpipe TO marketpipe_writer, marketpipe_analyst;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA marketpipe TO marketpipe_writer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA marketpipe TO marketpipe_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA marketpipe TO marketpipe_analyst;
ALTER DEFAULT PRIVILEGES IN SCHEMA marketpipe GRANT SELECT ON TABLES TO marketpipe_analyst;
ALTER DEFAULT PRIVILEGES IN SCHEMA marketpipe GRANT SELECT, INSERT, UPDATE ON TABLES TO marketpipe_writer;
-- Pagila lives in public: our roles may not create there (PostgreSQL 15 already denies PUBLIC).
REVOKE CREATE ON SCHEMA public FROM marketpipe_writer, marketpipe_analyst;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (2, 'roles') ON CONFLICT (version) DO NOTHING;
