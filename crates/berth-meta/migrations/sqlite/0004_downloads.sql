-- Platform of single-platform images (from their config, read at push time) and the
-- download counters, aggregated per hour.
ALTER TABLE manifests ADD COLUMN platform TEXT;

CREATE TABLE downloads (
    repo      TEXT NOT NULL,
    version   TEXT NOT NULL,   -- '' when unknown
    platform  TEXT NOT NULL,   -- os/arch[/variant], 'index-only' or 'unknown'
    client    TEXT NOT NULL,   -- docker, containerd, podman, helm, oras, berth, other
    hour      INTEGER NOT NULL, -- unix seconds / 3600
    count     INTEGER NOT NULL,
    PRIMARY KEY (repo, hour, version, platform, client)
) WITHOUT ROWID;

CREATE TABLE bytes_served (
    repo   TEXT NOT NULL,
    hour   INTEGER NOT NULL,
    bytes  INTEGER NOT NULL,
    PRIMARY KEY (repo, hour)
) WITHOUT ROWID;
