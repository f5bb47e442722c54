-- When each manifest was last pulled (a GET of its bytes), for the retention rules'
-- keep_pulled_within. The analytics flush writes it with the download counters, which
-- count versions, not tags or digests, and so cannot say which tag was pulled.
CREATE TABLE manifest_pulls (
    repo       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    pulled_at  INTEGER NOT NULL,  -- unix seconds
    PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
