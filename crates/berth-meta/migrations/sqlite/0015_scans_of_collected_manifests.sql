-- Scans of manifests that garbage collection deleted before its transaction deleted
-- their scans too: the rows whose manifest is gone are dropped once. A scan row is only
-- ever queued after its manifest is stored, so no row without a manifest is wanted.
DELETE FROM scans
WHERE NOT EXISTS (SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repo_id
                  WHERE r.name = scans.repo AND m.digest = scans.digest);
