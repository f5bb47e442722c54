-- Claims on pending scans (`ScanStore::scan_claim`): unix seconds when a scanner took the
-- row, so that scanners sharing a database do not scan one image twice; a claim runs out
-- after the lease the scanner passes.
ALTER TABLE scans ADD COLUMN claimed_at INTEGER;
