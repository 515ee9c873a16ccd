-- The loader writes a changed bar or daily bar by deleting the stored row and COPYing the new
-- one in the same transaction, under the series' lock (services/loader/upsert.py: no stage, no
-- join; a re-sent bar that did not change is never touched). So it may delete rows of these two
-- tables, and of no other: raw_payloads stays INSERT-only for the fetcher (0005). That bars a
-- restatement no longer serves are removed only through marketpipe.remove_restated_bars, which
-- keeps them in restatements.removed_bars (0009), is now the loader's code's rule (every delete
-- of a load replaces the row in the same transaction), no longer a privilege.
GRANT DELETE ON marketpipe.bars, marketpipe.daily_bars TO marketpipe_loader;

INSERT INTO marketpipe.schema_migrations (version, name)
VALUES (15, 'loader_replaces_changed_rows') ON CONFLICT (version) DO NOTHING;
