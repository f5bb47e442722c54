-- Berth metadata schema, version 1 (SQLite).
CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- A blob is visible in a repository only through a link row.
CREATE TABLE blobs (
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    digest      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX blobs_by_digest ON blobs(digest);

-- Manifests keep the exact bytes pushed; the digest is of those bytes.
CREATE TABLE manifests (
    repo_id        INTEGER NOT NULL REFERENCES repositories(id),
    digest         TEXT NOT NULL,
    media_type     TEXT NOT NULL,
    content        BLOB NOT NULL,
    subject        TEXT,
    artifact_type  TEXT,
    annotations    TEXT,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX manifests_by_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;

-- What each manifest references: kind 0 = blob, 1 = child manifest.
CREATE TABLE manifest_refs (
    repo_id   INTEGER NOT NULL,
    manifest  TEXT NOT NULL,
    target    TEXT NOT NULL,
    kind      INTEGER NOT NULL,
    PRIMARY KEY (repo_id, manifest, kind, target)
) WITHOUT ROWID;
CREATE INDEX manifest_refs_by_target ON manifest_refs(repo_id, target);

CREATE TABLE tags (
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
) WITHOUT ROWID;
CREATE INDEX tags_by_digest ON tags(repo_id, digest);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repo        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX uploads_by_age ON uploads(updated_at);
