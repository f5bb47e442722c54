-- The org.opencontainers.image.version annotation of each manifest, for tag policies.
ALTER TABLE manifests ADD COLUMN version TEXT;
