-- Restatements: the vendor changed history we had stored (a split or adjustment, a corrected bar).
-- The loader compares every payload's bars with the stored ones where both are complete; a
-- difference beyond the stored precision holds the batch back (old and new prices never mix),
-- is recorded here and restated: the fetcher re-fetches the series' whole stored history and the
-- loader swaps it in one transaction (status 'restated'). `ops restate` records kind 'requested'.

CREATE TABLE IF NOT EXISTS marketpipe.restatements (
    restatement_id  bigserial PRIMARY KEY,
    symbol          text NOT NULL,
    interval        text NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL CHECK (kind IN ('split', 'correction', 'requested')),
    ratio           double precision,  -- split: stored price / new price (4 after a 4-for-1 split)
    max_difference  double precision,  -- correction: largest relative difference of a value
    first_bar       timestamptz,       -- first and last stored bar found changed
    last_bar        timestamptz,
    bars_affected   integer NOT NULL DEFAULT 0,
    payload_id      text,              -- the payload that revealed it (raw_payloads keeps both)
    history_from    timestamptz,       -- the series' first stored bar: what the restate re-fetches
    status          text NOT NULL DEFAULT 'detected'
                    CHECK (status IN ('detected', 'restated', 'failed')),
    restated_at     timestamptz,
    bars_restated   integer,           -- bars written or changed by the swap
    bars_removed    integer,           -- stored bars the new answer no longer has ...
    removed_bars    jsonb,             -- ... each with its values: reported, never dropped silently
    message         text
);
-- One open restatement per series: a batch revealing the same change again adds nothing.
CREATE UNIQUE INDEX IF NOT EXISTS restatements_open_idx
    ON marketpipe.restatements (symbol, interval) WHERE status = 'detected';
CREATE INDEX IF NOT EXISTS restatements_detected_idx ON marketpipe.restatements (detected_at);

-- The swap removes the stored bars the new answer no longer has. The loader's role still may not
-- DELETE: it may only call this, which removes bars of an open restatement's series and keeps
-- each removed bar's values in the restatement (reported, never dropped silently), together with
-- the days left without a bar of the series' interval.
CREATE OR REPLACE FUNCTION marketpipe.remove_restated_bars(p_restatement bigint, p_bar_times jsonb)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target  marketpipe.restatements;
    removed jsonb;
    n       integer;
BEGIN
    SELECT * INTO target FROM marketpipe.restatements
    WHERE restatement_id = p_restatement AND status = 'detected' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'restatement % is not open', p_restatement;
    END IF;
    WITH gone AS (
        DELETE FROM marketpipe.bars b
        WHERE b.symbol = target.symbol AND b.interval = target.interval
          AND b.bar_time IN (SELECT value::timestamptz FROM jsonb_array_elements_text(p_bar_times))
        RETURNING b.bar_time, b.open, b.high, b.low, b.close, b.volume, b.is_complete, b.payload_id
    )
    SELECT count(*)::integer, coalesce(jsonb_agg(to_jsonb(gone) ORDER BY gone.bar_time), '[]')
    INTO n, removed FROM gone;
    DELETE FROM marketpipe.daily_bars d
    WHERE d.symbol = target.symbol AND d.source_interval = target.interval
      AND NOT EXISTS (SELECT 1 FROM marketpipe.bars b WHERE b.symbol = d.symbol
                      AND b.interval = target.interval AND b.trading_date = d.trading_date);
    UPDATE marketpipe.restatements SET bars_removed = n, removed_bars = removed
    WHERE restatement_id = p_restatement;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION marketpipe.remove_restated_bars(bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION marketpipe.remove_restated_bars(bigint, jsonb) TO marketpipe_writer;

GRANT SELECT, INSERT, UPDATE ON marketpipe.restatements TO marketpipe_writer;
GRANT USAGE ON SEQUENCE marketpipe.restatements_restatement_id_seq TO marketpipe_writer;
-- The fetcher only reads which series wait for a restate.
GRANT SELECT ON marketpipe.restatements TO marketpipe_fetcher;
GRANT SELECT ON marketpipe.restatements TO marketpipe_analyst;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (9, 'restatements') ON CONFLICT (version) DO NOTHING;
