#!/usr/bin/env python3
"""Writes a multi-platform OCI image layout for the copy benchmark.

    mkimage.py [--total-mib 300] [--layers 5] DIR SEED

Two platforms (linux/amd64, linux/arm64), each an image of LAYERS real tar+gzip layers
(one file of pseudo-random bytes each, gzip level 0 so that no client spends its time
compressing) with a correct config (diff_ids), manifest and index, tagged "latest" in
the layout's index.json. SEED makes every byte of the image new, so neither a client's
blob cache nor the registry already holds any of it.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import tarfile

PLATFORMS = [("linux", "amd64"), ("linux", "arm64")]
# Share of a platform's bytes per layer: a few small layers and a couple of big ones.
WEIGHTS = [0.04, 0.08, 0.16, 0.32, 0.40]


def put_blob(root, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)


def layer(rng, size, name):
    payload = rng.randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, compresslevel=0, mtime=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total-mib", type=float, default=300)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("dir")
    ap.add_argument("seed", type=int)
    a = ap.parse_args()

    root = a.dir
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    rng = random.Random(a.seed)
    per_platform = int(a.total_mib * (1 << 20) / len(PLATFORMS))
    weights = (WEIGHTS * ((a.layers // len(WEIGHTS)) + 1))[: a.layers]
    scale = sum(weights)
    manifests = []
    for os_name, arch in PLATFORMS:
        layers, diff_ids = [], []
        for i, w in enumerate(weights):
            raw, gz = layer(rng, max(1, int(per_platform * w / scale)), f"{arch}-layer-{i}.bin")
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            digest, size = put_blob(root, gz)
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
        config = json.dumps({
            "architecture": arch, "os": os_name,
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"berth-bench seed {a.seed}"}],
        }).encode()
        cd, cs = put_blob(root, config)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers,
        }).encode()
        md, ms = put_blob(root, manifest)
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                          "platform": {"os": os_name, "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": manifests}).encode()
    idx, isz = put_blob(root, index)
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idx, "size": isz,
                                  "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)


if __name__ == "__main__":
    main()
