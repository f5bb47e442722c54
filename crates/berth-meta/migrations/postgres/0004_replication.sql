-- The replication queue: SQLite's migration 0013. One row per (rule, repository,
-- reference) still to be replicated, deleted once the target holds the change; a newer
-- change supersedes the pending row (`seq`). Times are unix milliseconds.
CREATE TABLE replication_queue (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule          TEXT COLLATE "C" NOT NULL,
    repo          TEXT COLLATE "C" NOT NULL,
    reference     TEXT COLLATE "C" NOT NULL,
    op            TEXT NOT NULL,
    seq           BIGINT NOT NULL DEFAULT 1,
    created_at    BIGINT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  BIGINT NOT NULL,
    last_error    TEXT,
    dead          BOOLEAN NOT NULL DEFAULT FALSE,
    -- Which store instance (replica) claimed the row, and until when (unix milliseconds)
    -- the other replicas leave it to that one, so that one copy runs per row.
    leased_by     TEXT,
    leased_until  BIGINT,
    UNIQUE (rule, repo, reference)
);
CREATE INDEX replication_queue_due ON replication_queue(next_attempt, id) WHERE NOT dead;

CREATE TABLE replication_rules (
    rule          TEXT COLLATE "C" PRIMARY KEY,
    copied        BIGINT NOT NULL DEFAULT 0,
    failures      BIGINT NOT NULL DEFAULT 0,
    last_success  BIGINT,
    last_failure  BIGINT,
    last_error    TEXT
);
