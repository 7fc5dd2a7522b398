-- The ledger, version 1. Runs unchanged on SQLite and PostgreSQL: keep it to BIGINT,
-- TEXT, plain constraints and indexes.

-- Integer front ids: the next number each route hands out (handed out in blocks).
CREATE TABLE sequences (
    route   TEXT PRIMARY KEY,
    next_id BIGINT NOT NULL
);

-- Database-wide counters. 'files.seq' numbers rows of `files` in insertion order
-- (created by the first record, with an upsert).
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- One attachment casegate attached or listed.
CREATE TABLE files (
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
    PRIMARY KEY (route, front_id),
    UNIQUE (route, back_id)
);
CREATE INDEX files_by_case ON files (route, front_case, seq);
CREATE INDEX files_by_seq ON files (route, seq);
