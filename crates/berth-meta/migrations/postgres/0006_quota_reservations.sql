-- Quota reservations: bytes a push is about to add to a repository under a quota, held
-- from just before its write until just after, so that concurrent pushes (from any
-- replica) cannot together exceed the limit. A row counts only while its content (a
-- blob link, kind 0, or a manifest, kind 1) is not yet in the repository, and only for
-- RESERVATION_STALE_SECS after created_at. SQLite keeps them in memory (one process).
-- Also SQLite's 0015: scans of manifests that garbage collection deleted are dropped.
CREATE TABLE IF NOT EXISTS quota_reservations (
    id         TEXT COLLATE "C" PRIMARY KEY,
    repo       TEXT COLLATE "C" NOT NULL,
    kind       SMALLINT NOT NULL,
    digest     TEXT COLLATE "C" NOT NULL,
    bytes      BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS quota_reservations_repo ON quota_reservations(repo);
DELETE FROM scans
WHERE NOT EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id
                  WHERE r.name = scans.repo AND m.digest = scans.digest);
