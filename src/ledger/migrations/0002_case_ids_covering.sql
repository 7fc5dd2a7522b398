-- The ledger, version 2. Runs unchanged on SQLite and PostgreSQL.

-- A Thalamus upload answer lists every file of its case the ledger knows (up to 10 000),
-- by `route, front_case` in `seq` order. With the front id in the index, that listing
-- reads the index alone instead of looking each file up in the table as well.
DROP INDEX files_by_case;
CREATE INDEX files_by_case ON files (route, front_case, seq, front_id);
