-- Requests per repository by route, status class and OCI error code, per hour.
CREATE TABLE requests (
    repo    TEXT NOT NULL,
    hour    INTEGER NOT NULL,
    route   TEXT NOT NULL,
    class   INTEGER NOT NULL,  -- 2, 3, 4 or 5 (status / 100)
    code    TEXT NOT NULL,     -- OCI error code, '' for successes
    count   INTEGER NOT NULL,
    PRIMARY KEY (repo, hour, route, class, code)
) WITHOUT ROWID;
