-- Downloads gain the account that fetched and what kind of fetch it was: a download
-- (image content: a platform manifest) or an inspection (metadata only: an index
-- fetched alone, or a HEAD). Rows counted before as platform 'index-only' were index
-- fetches with no platform pull after them, so they become inspections of an 'index'.
-- SQLite cannot change a primary key, so the table is rebuilt.
CREATE TABLE downloads_v8 (
    repo      TEXT NOT NULL,
    version   TEXT NOT NULL,    -- '' when unknown
    platform  TEXT NOT NULL,    -- os/arch[/variant], 'index' or 'unknown'
    client    TEXT NOT NULL,    -- docker, containerd, podman, helm, oras, berth, other
    account   TEXT NOT NULL,    -- '' for anonymous callers and open registries
    kind      TEXT NOT NULL,    -- 'download' or 'inspection'
    hour      INTEGER NOT NULL, -- unix seconds / 3600
    count     INTEGER NOT NULL,
    PRIMARY KEY (repo, hour, kind, version, platform, client, account)
) WITHOUT ROWID;

INSERT INTO downloads_v8 (repo, version, platform, client, account, kind, hour, count)
SELECT repo, version,
       CASE platform WHEN 'index-only' THEN 'index' ELSE platform END,
       client, '',
       CASE platform WHEN 'index-only' THEN 'inspection' ELSE 'download' END,
       hour, count
FROM downloads;

DROP TABLE downloads;
ALTER TABLE downloads_v8 RENAME TO downloads;
