-- Manifest pulls and the webhook outbox: SQLite's migrations 0010 and 0011.

-- When each manifest was last pulled (a GET of its bytes), for the retention rules'
-- keep_pulled_within. Replicas flush into the same rows and keep the latest time.
CREATE TABLE manifest_pulls (
    repo       TEXT COLLATE "C" NOT NULL,
    digest     TEXT COLLATE "C" NOT NULL,
    pulled_at  BIGINT NOT NULL,  -- unix seconds
    PRIMARY KEY (repo, digest)
);

-- The webhook outbox (AccountStore::outbox_*): one row per event and configured hook
-- still to be delivered, deleted once the hook's URL accepted it. Times are unix
-- milliseconds.
CREATE TABLE webhook_outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hook          TEXT COLLATE "C" NOT NULL,
    -- The CloudEvents `id`, the same for every hook the event goes to.
    event_id      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    -- The exact JSON body to POST.
    body          TEXT NOT NULL,
    -- When the current retry window began: enqueued, or last redelivered.
    since         BIGINT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  BIGINT NOT NULL,
    last_error    TEXT,
    -- Retrying gave up: kept (visible) until redelivered.
    dead          BOOLEAN NOT NULL DEFAULT FALSE,
    -- Which store instance (replica) last read the row as due, and until when (unix
    -- milliseconds) the other replicas leave it to that one: a lease, so that two
    -- replicas do not deliver the same row at once. Not part of OutboxEntry.
    leased_by     TEXT,
    leased_until  BIGINT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox(next_attempt, id) WHERE NOT dead;
CREATE INDEX webhook_outbox_by_hook ON webhook_outbox(hook, dead);

-- The last outcome of each hook's deliveries, which outlives the rows it was about.
CREATE TABLE webhook_hooks (
    hook          TEXT COLLATE "C" PRIMARY KEY,
    last_success  BIGINT,
    last_failure  BIGINT,
    last_error    TEXT
);
