-- Accounts, grants, public patterns and the audit log (SQLite).
CREATE TABLE accounts (
    name         TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,          -- 'user' or 'robot'
    secret_hash  TEXT NOT NULL,          -- argon2id PHC string, or sha256:<hex> for robots
    disabled     INTEGER NOT NULL DEFAULT 0,
    expires_at   INTEGER,                -- unix seconds; NULL = never
    created_at   INTEGER NOT NULL
);

CREATE TABLE grants (
    account  TEXT NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    pattern  TEXT NOT NULL,
    actions  TEXT NOT NULL,              -- comma-separated: pull,push,delete,admin
    PRIMARY KEY (account, pattern)
);

CREATE TABLE public_patterns (
    pattern     TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '',
    client  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_time ON audit(at);
