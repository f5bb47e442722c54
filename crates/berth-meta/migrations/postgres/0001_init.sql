-- Berth metadata schema on PostgreSQL: the final shape of the SQLite schema as of its
-- migration 0009, in one step. Key columns use the "C" collation so that names and
-- digests sort bytewise, as SQLite sorts them, whatever the database's locale: the tags
-- and catalog APIs page by "strictly after the last name".

CREATE TABLE repositories (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- A blob is visible in a repository only through a link row.
CREATE TABLE blobs (
    repo_id     BIGINT NOT NULL REFERENCES repositories(id),
    digest      TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX blobs_by_digest ON blobs(digest);

-- Manifests keep the exact bytes pushed; the digest is of those bytes.
CREATE TABLE manifests (
    repo_id        BIGINT NOT NULL REFERENCES repositories(id),
    digest         TEXT COLLATE "C" NOT NULL,
    media_type     TEXT NOT NULL,
    content        BYTEA NOT NULL,
    subject        TEXT COLLATE "C",
    artifact_type  TEXT,
    annotations    TEXT,
    created_at     BIGINT NOT NULL,
    version        TEXT,
    platform       TEXT,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;

-- What each manifest references: kind 0 = blob, 1 = child manifest.
CREATE TABLE manifest_refs (
    repo_id   BIGINT NOT NULL,
    manifest  TEXT COLLATE "C" NOT NULL,
    target    TEXT COLLATE "C" NOT NULL,
    kind      SMALLINT NOT NULL,
    PRIMARY KEY (repo_id, manifest, kind, target)
);
CREATE INDEX manifest_refs_by_target ON manifest_refs(repo_id, target);

-- `subject` and `hidden` are functions of the name (see berth_meta::artifact_tags).
CREATE TABLE tags (
    repo_id     BIGINT NOT NULL REFERENCES repositories(id),
    name        TEXT COLLATE "C" NOT NULL,
    digest      TEXT COLLATE "C" NOT NULL,
    updated_at  BIGINT NOT NULL,
    subject     TEXT COLLATE "C",
    hidden      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (repo_id, name)
);
CREATE INDEX tags_by_digest ON tags(repo_id, digest);
CREATE INDEX tags_by_subject ON tags(repo_id, subject) WHERE subject IS NOT NULL;

CREATE TABLE uploads (
    id          TEXT COLLATE "C" PRIMARY KEY,
    repo        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX uploads_by_age ON uploads(updated_at);

CREATE TABLE accounts (
    name         TEXT COLLATE "C" PRIMARY KEY,
    kind         TEXT NOT NULL,          -- 'user' or 'robot'
    secret_hash  TEXT NOT NULL,          -- argon2id PHC string, or sha256:<hex> for robots
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    expires_at   BIGINT,                 -- unix seconds; NULL = never
    created_at   BIGINT NOT NULL
);

CREATE TABLE grants (
    account  TEXT COLLATE "C" NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
    pattern  TEXT COLLATE "C" NOT NULL,
    actions  TEXT NOT NULL,              -- comma-separated: pull,push,delete,admin
    PRIMARY KEY (account, pattern)
);

CREATE TABLE public_patterns (
    pattern     TEXT COLLATE "C" PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

CREATE TABLE audit (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '',
    client  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_time ON audit(at);

-- Downloads and inspections per hour (see SQLite's 0004 and 0008).
CREATE TABLE downloads (
    repo      TEXT COLLATE "C" NOT NULL,
    version   TEXT COLLATE "C" NOT NULL,    -- '' when unknown
    platform  TEXT COLLATE "C" NOT NULL,    -- os/arch[/variant], 'index' or 'unknown'
    client    TEXT COLLATE "C" NOT NULL,
    account   TEXT COLLATE "C" NOT NULL,    -- '' for anonymous callers and open registries
    kind      TEXT COLLATE "C" NOT NULL,    -- 'download' or 'inspection'
    hour      BIGINT NOT NULL,              -- unix seconds / 3600
    count     BIGINT NOT NULL,
    PRIMARY KEY (repo, hour, kind, version, platform, client, account)
);

CREATE TABLE bytes_served (
    repo   TEXT COLLATE "C" NOT NULL,
    hour   BIGINT NOT NULL,
    bytes  BIGINT NOT NULL,
    PRIMARY KEY (repo, hour)
);

CREATE TABLE requests (
    repo    TEXT COLLATE "C" NOT NULL,
    hour    BIGINT NOT NULL,
    route   TEXT COLLATE "C" NOT NULL,
    class   INTEGER NOT NULL,  -- 2, 3, 4 or 5 (status / 100)
    code    TEXT COLLATE "C" NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (repo, hour, route, class, code)
);

-- Claims and deletion tombstones (see the crate docs). Unlike SQLite, whose one writing
-- process keeps claims in memory, replicas share this database: claims are rows.
CREATE TABLE blob_claims (
    id          TEXT COLLATE "C" PRIMARY KEY,
    digest      TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX blob_claims_by_digest ON blob_claims(digest);
CREATE INDEX blob_claims_by_age ON blob_claims(created_at);

CREATE TABLE blob_tombstones (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

-- The publish gate (berth_meta::Gate).
CREATE TABLE pending_tags (
    repo_id     BIGINT NOT NULL REFERENCES repositories(id),
    name        TEXT COLLATE "C" NOT NULL,
    digest      TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name)
);
CREATE INDEX pending_tags_by_digest ON pending_tags(repo_id, digest);

CREATE TABLE signatures (
    repo_id     BIGINT NOT NULL REFERENCES repositories(id),
    subject     TEXT COLLATE "C" NOT NULL,
    signature   TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (repo_id, subject, signature, key)
);
CREATE INDEX signatures_by_signature ON signatures(repo_id, signature);
