-- The publish gate (berth_meta::Gate). A release tag pushed onto a manifest that has no
-- valid signature yet waits here, with the other tags of its push, instead of in `tags`:
-- it is invisible to pulls and to the tags list until a signature arrives.
CREATE TABLE pending_tags (
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
) WITHOUT ROWID;
CREATE INDEX pending_tags_by_digest ON pending_tags(repo_id, digest);

-- Signatures the server verified when they were pushed: `signature` (a manifest digest)
-- signs `subject` with the key whose fingerprint is `key`. A gated push reads this table
-- in its transaction, so a signature stored just before it cannot be missed.
CREATE TABLE signatures (
    repo_id     INTEGER NOT NULL REFERENCES repositories(id),
    subject     TEXT NOT NULL,
    signature   TEXT NOT NULL,
    key         TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, subject, signature, key)
) WITHOUT ROWID;
CREATE INDEX signatures_by_signature ON signatures(repo_id, signature);
