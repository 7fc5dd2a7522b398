-- The ledger, version 3. Runs unchanged on SQLite and PostgreSQL.

-- 'files.changes' counts rows deleted from `files`, bumped in the deleting transaction.
-- A casegate that keeps a case's listing in memory (a Thalamus upload answer lists the
-- whole case) reads it with the rows added since, and reads the case again when it moved:
-- another process sharing the ledger may have deleted one of the files it holds.
INSERT INTO counters (name, value) VALUES ('files.changes', 0);
