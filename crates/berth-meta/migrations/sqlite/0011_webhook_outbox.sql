-- The webhook outbox (AccountStore::outbox_*): one row per event and configured hook
-- still to be delivered. A row is written before the request that caused its event is
-- answered, and deleted once the hook's URL accepted it, so a restart loses no event.
-- Times are unix milliseconds (retries are spaced by sub-second jitter).
CREATE TABLE webhook_outbox (
    id            INTEGER PRIMARY KEY,
    hook          TEXT NOT NULL,
    -- The CloudEvents `id`, the same for every hook the event goes to.
    event_id      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    -- The exact JSON body to POST.
    body          TEXT NOT NULL,
    -- When the current retry window began: enqueued, or last redelivered.
    since         INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  INTEGER NOT NULL,
    last_error    TEXT,
    -- 1 once retrying gave up: kept (visible) until redelivered.
    dead          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhook_outbox_due ON webhook_outbox(dead, next_attempt);
CREATE INDEX webhook_outbox_by_hook ON webhook_outbox(hook, dead);

-- The last outcome of each hook's deliveries, which outlives the rows it was about.
CREATE TABLE webhook_hooks (
    hook          TEXT PRIMARY KEY,
    last_success  INTEGER,
    last_failure  INTEGER,
    last_error    TEXT
) WITHOUT ROWID;
