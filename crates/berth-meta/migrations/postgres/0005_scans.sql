-- Vulnerability scans of pushed images and the queue of those still to make (SQLite's
-- migration 0014; see there). Idempotent, since it is numbered after a migration made
-- in parallel.
CREATE TABLE IF NOT EXISTS scans (
    repo         TEXT COLLATE "C" NOT NULL,
    digest       TEXT COLLATE "C" NOT NULL,
    state        TEXT NOT NULL,
    queued_at    BIGINT NOT NULL,
    packages     TEXT NOT NULL DEFAULT '',
    critical     BIGINT NOT NULL DEFAULT 0,
    high         BIGINT NOT NULL DEFAULT 0,
    medium       BIGINT NOT NULL DEFAULT 0,
    low          BIGINT NOT NULL DEFAULT 0,
    unknown      BIGINT NOT NULL DEFAULT 0,
    db_version   TEXT,
    db_imported  TEXT,
    scanned_at   BIGINT,
    matched_at   BIGINT,
    error        TEXT,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS scans_pending ON scans(queued_at) WHERE state = 'pending';
