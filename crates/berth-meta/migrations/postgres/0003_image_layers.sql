-- The ordered layers of every image manifest pushed, and the base it was built on, for
-- the stale-base report (SQLite's migration 0013). `layers` is the layer digests joined
-- by single spaces; a hash index serves the exact-match lookups of each prefix and, unlike
-- a B-tree, takes keys of any length (an image of 40 layers makes a 3 KB key).
CREATE TABLE image_layers (
    repo_id        BIGINT NOT NULL REFERENCES repositories(id),
    digest         TEXT COLLATE "C" NOT NULL,
    layers         TEXT COLLATE "C" NOT NULL,
    base_repo      TEXT COLLATE "C",
    base_tag       TEXT COLLATE "C",
    base_digest    TEXT COLLATE "C",
    base_declared  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX image_layers_by_layers ON image_layers USING hash (layers);
CREATE INDEX image_layers_by_base ON image_layers(base_repo, base_tag) WHERE base_repo IS NOT NULL;
