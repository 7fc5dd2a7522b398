-- The ledger, version 5. Runs unchanged on SQLite and PostgreSQL.

-- `files_by_seq` (route, seq) served only the dump of a route (`casegate ledger`),
-- an operator's command, while every new file paid an index entry for it, and every
-- commit a page of it. A dump now sorts its route's rows instead.
DROP INDEX files_by_seq;
