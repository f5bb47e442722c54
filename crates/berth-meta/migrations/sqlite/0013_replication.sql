-- The replication queue (AccountStore::replication_*): one row per (rule, repository,
-- reference) still to be replicated to the rule's target. A row is written before the
-- push (or deletion) that caused it is answered and deleted once the target holds the
-- change, so a restart resumes where it stopped. A newer change of the same reference
-- supersedes the pending row (`seq` counts them) instead of adding one. Times are unix
-- milliseconds.
CREATE TABLE replication_queue (
    id            INTEGER PRIMARY KEY,
    rule          TEXT NOT NULL,
    repo          TEXT NOT NULL,
    -- A tag, or a digest (`sha256:...`) for a referrer pushed by digest or a deletion.
    reference     TEXT NOT NULL,
    -- 'copy' or 'delete'.
    op            TEXT NOT NULL,
    -- Raised by every change that supersedes the row; an attempt of an older `seq`
    -- does not delete it.
    seq           INTEGER NOT NULL DEFAULT 1,
    -- When the oldest change not yet replicated was queued (the lag).
    created_at    INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  INTEGER NOT NULL,
    last_error    TEXT,
    -- 1 once retrying gave up: kept (visible) until the reference changes again or a
    -- full sync queues it.
    dead          INTEGER NOT NULL DEFAULT 0,
    UNIQUE (rule, repo, reference)
);
CREATE INDEX replication_queue_due ON replication_queue(dead, next_attempt);

-- What each rule achieved, which outlives the rows it was about.
CREATE TABLE replication_rules (
    rule          TEXT PRIMARY KEY,
    copied        INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    last_success  INTEGER,
    last_failure  INTEGER,
    last_error    TEXT
) WITHOUT ROWID;
