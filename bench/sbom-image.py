#!/usr/bin/env python3
"""Writes a one-platform OCI image layout for the SBOM benchmark (bench/sbom).

    sbom-image.py [--total-mib 300] DIR

Five tar+gzip layers (gzip level 6, Docker's default) of about TOTAL_MIB uncompressed
bytes together, shaped like a real application image: a Debian base (this machine's
/etc/os-release and /var/lib/dpkg/status, copies of its ELF binaries), this Python's
site-packages metadata, a node_modules tree of 2000 packages, an application layer of
large files, and a last layer with whiteouts. Half of the filler is random bytes and
half is text, so that the layers compress about as much as real ones do.
"""

import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import random
import sysconfig
import tarfile

MIB = 1 << 20


def put_blob(root, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return "sha256:" + d, len(data)


class Layer:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.size = 0

    def add(self, name, data, mode=0o644):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = 0
        self.tar.addfile(info, io.BytesIO(data))
        self.size += len(data)

    def filler(self, rng, prefix, total, file_size):
        text = (b"lorem ipsum dolor sit amet, consectetur adipiscing elit " * 64)
        n = 0
        while self.size < total:
            size = min(file_size, total - self.size)
            half = size // 2
            self.add(f"{prefix}/f{n}.dat", rng.randbytes(half) + (text * (size // len(text) + 1))[: size - half])
            n += 1

    def finish(self):
        self.tar.close()
        raw = self.buf.getvalue()
        return raw, gzip.compress(raw, compresslevel=6, mtime=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total-mib", type=float, default=300)
    ap.add_argument("dir")
    a = ap.parse_args()
    total = int(a.total_mib * MIB)
    rng = random.Random(1)
    layers = []

    base = Layer()
    for f in ["/etc/os-release", "/var/lib/dpkg/status"]:
        if os.path.exists(f):
            base.add(f.lstrip("/"), open(f, "rb").read())
    for f in sorted(glob.glob("/usr/bin/*")):
        if base.size > total * 0.12:
            break
        if os.path.isfile(f) and not os.path.islink(f):
            data = open(f, "rb").read()
            if data[:4] == b"\x7fELF":
                base.add(f.lstrip("/"), data, 0o755)
    base.filler(rng, "usr/share/base", int(total * 0.15), 256 << 10)
    layers.append(base)

    py = Layer()
    site = sysconfig.get_paths()["purelib"]
    for meta in glob.glob(os.path.join(site, "*.dist-info", "METADATA")):
        py.add("usr/lib/python3/dist-packages/" + os.path.relpath(meta, site), open(meta, "rb").read())
    py.filler(rng, "usr/lib/python3/data", int(total * 0.15), 64 << 10)
    layers.append(py)

    node = Layer()
    for i in range(2000):
        pj = json.dumps({"name": f"pkg-{i}", "version": f"1.{i % 50}.0", "license": "MIT"}).encode()
        node.add(f"app/node_modules/pkg-{i}/package.json", pj)
        node.add(f"app/node_modules/pkg-{i}/index.js", b"module.exports = 1;\n" * 200)
    node.filler(rng, "app/node_modules/big/dist", int(total * 0.20), 512 << 10)
    layers.append(node)

    app = Layer()
    app.filler(rng, "srv/app", int(total * 0.45), 8 << 20)
    layers.append(app)

    last = Layer()
    last.add("app/node_modules/.wh.pkg-0", b"")
    last.add("usr/share/base/.wh..wh..opq", b"")
    last.filler(rng, "srv/app/late", int(total * 0.05), 1 << 20)
    layers.append(last)

    root = a.dir
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    descs, diff_ids = [], []
    for layer in layers:
        raw, gz = layer.finish()
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        d, s = put_blob(root, gz)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd, cs = put_blob(root, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    }).encode()
    md, ms = put_blob(root, manifest)
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)


if __name__ == "__main__":
    main()
