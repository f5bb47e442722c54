-- Claims on pending scans (`ScanStore::scan_claim`; SQLite's migration 0016): unix seconds
-- when a replica's scanner took the row, so that replicas do not scan one image twice; a
-- claim runs out after the lease the scanner passes.
ALTER TABLE scans ADD COLUMN IF NOT EXISTS claimed_at BIGINT;
