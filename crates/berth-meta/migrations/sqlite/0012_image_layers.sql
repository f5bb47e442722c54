-- The ordered layers of every image manifest pushed, and the base it was built on, for
-- the stale-base report. `layers` is the layer digests joined by single spaces, so the
-- images whose whole layer list is a given prefix are found through the index.
-- base_repo/base_tag name the base image by its tag and base_digest is what that tag
-- pointed to when this image was pushed (or what the base.digest annotation declares);
-- the names are text, not ids, since a declared base may live in a repository pushed
-- later. base_declared is 1 when the org.opencontainers.image.base.* annotations said so.
CREATE TABLE image_layers (
    repo_id        INTEGER NOT NULL REFERENCES repositories(id),
    digest         TEXT NOT NULL,
    layers         TEXT NOT NULL,
    base_repo      TEXT,
    base_tag       TEXT,
    base_digest    TEXT,
    base_declared  INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX image_layers_by_layers ON image_layers(layers);
CREATE INDEX image_layers_by_base ON image_layers(base_repo, base_tag) WHERE base_repo IS NOT NULL;
