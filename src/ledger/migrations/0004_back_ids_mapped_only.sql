-- The ledger, version 4. Runs unchanged on SQLite and PostgreSQL.

-- A route that passes ids through (the front id is the back id: caseiq -> caseiq, a
-- caseiq or kibana back into a kibana front) held each file's id in two unique indexes:
-- the primary key (route, front_id) and (route, back_id). Behind an upstream that names
-- files with random ids (Case IQ's UUIDs), every upload wrote a page of each at a random
-- place. (route, back_id) is now indexed, and unique, only for the rows whose two ids
-- differ; the primary key holds the others, and a look-up by back id asks both. SQLite
-- cannot drop a table's UNIQUE constraint, so the table is built again.
CREATE TABLE files_v4 (
    route           TEXT NOT NULL,
    front_id        TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    front_case      TEXT,
    back_case       TEXT,
    back_id         TEXT NOT NULL,
    back_comment_id TEXT,
    name            TEXT,
    content_type    TEXT,
    size            BIGINT,
    created_at      TEXT,
    uploader        TEXT,
    guid            TEXT,
    md5             TEXT,
    sha256          TEXT,
    PRIMARY KEY (route, front_id)
);
INSERT INTO files_v4 (route, front_id, seq, front_case, back_case, back_id,
    back_comment_id, name, content_type, size, created_at, uploader, guid, md5, sha256)
SELECT route, front_id, seq, front_case, back_case, back_id, back_comment_id, name,
    content_type, size, created_at, uploader, guid, md5, sha256
FROM files ORDER BY route, seq;
DROP TABLE files;
ALTER TABLE files_v4 RENAME TO files;
CREATE INDEX files_by_case ON files (route, front_case, seq, front_id);
CREATE INDEX files_by_seq ON files (route, seq);
CREATE UNIQUE INDEX files_by_back ON files (route, back_id) WHERE back_id <> front_id;
