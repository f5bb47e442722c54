-- Vulnerability scans of pushed images and the queue of those still to make (the
-- server's scan on push). One row per (repository name, image manifest digest): state
-- 'pending' when queued (so a scan survives a restart), then 'done', 'failed' or
-- 'skipped'. packages holds the image's package URLs, one per line, so that a new
-- database import is applied by matching them again without reading the layers.
-- db_version identifies the vulnerability database matched against (a hash of its
-- meta.json), db_imported its latest import time. Idempotent, since it is numbered
-- after a migration made in parallel.
CREATE TABLE IF NOT EXISTS scans (
    repo         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    state        TEXT NOT NULL,
    queued_at    INTEGER NOT NULL,
    packages     TEXT NOT NULL DEFAULT '',
    critical     INTEGER NOT NULL DEFAULT 0,
    high         INTEGER NOT NULL DEFAULT 0,
    medium       INTEGER NOT NULL DEFAULT 0,
    low          INTEGER NOT NULL DEFAULT 0,
    unknown      INTEGER NOT NULL DEFAULT 0,
    db_version   TEXT,
    db_imported  TEXT,
    scanned_at   INTEGER,
    matched_at   INTEGER,
    error        TEXT,
    PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS scans_pending ON scans(queued_at) WHERE state = 'pending';
