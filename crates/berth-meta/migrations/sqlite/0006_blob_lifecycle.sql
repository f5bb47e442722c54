-- Claims and deletion tombstones: they order placing a blob's bytes against deleting
-- them across every process that shares the blob storage (see the crate docs).

-- Bytes of `digest` are being placed by the claim's holder; they must not be deleted.
CREATE TABLE blob_claims (
    id          TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX blob_claims_by_digest ON blob_claims(digest);
CREATE INDEX blob_claims_by_age ON blob_claims(created_at);

-- The bytes of `digest` are being deleted; no claim or link may be made meanwhile.
CREATE TABLE blob_tombstones (
    digest      TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
