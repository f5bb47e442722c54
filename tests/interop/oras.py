#!/usr/bin/env python3
"""oras (Python SDK, `pip install oras`) against Berth: push an artifact with a custom artifact
type (config media type), chunked and monolithic uploads, attach a referrer with `subject`,
discover it through the referrers API (with and without the artifactType filter), pull,
list and delete tags. Writes go to `b.host`, reads to `b.pull_host` (the same Berth, or the other
replica of a pair: see _berth.py)."""
import hashlib
import os
import sys
import tempfile
import time

# This file is named like the package: take its directory off the path to import the SDK.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
import oras.client  # noqa: E402
import oras.oci  # noqa: E402

sys.path.append(HERE)
from _berth import Berth  # noqa: E402

ART_TYPE = "application/vnd.berth.test.thing.v1+json"
SIG_TYPE = "application/vnd.berth.test.signature.v1+json"


def check(cond, msg):
    if not cond:
        raise SystemExit(f"FAIL: {msg}")
    print(f"ok  {msg}")


def main():
    with Berth() as b, tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        open("a.txt", "w").write("hello artifact\n")
        open("b.bin", "wb").write(os.urandom(300_000))
        open("thing.json", "w").write('{"kind": "thing"}')
        open("sig.txt", "w").write("signature bytes\n")
        open("sig.json", "w").write("{}")
        c = oras.client.OrasClient(hostname=b.host, insecure=True)
        base = f"http://{b.pull_host}/v2/artifacts/thing"
        wbase = f"http://{b.host}/v2/artifacts/thing"

        r = c.push(target=f"{b.host}/artifacts/thing:v1", files=["a.txt", "b.bin"],
                   manifest_config=f"thing.json:{ART_TYPE}",
                   manifest_annotations={"org.example.note": "interop"}, quiet=True)
        check(r.status_code == 201, f"push artifact (monolithic) -> {r.status_code}")
        r = c.push(target=f"{b.host}/artifacts/thing:v1-chunked", files=["a.txt", "b.bin"],
                   manifest_config=f"thing.json:{ART_TYPE}", do_chunked=True, chunk_size=64 * 1024,
                   quiet=True)
        check(r.status_code == 201, f"push artifact (chunked, 64 KiB PATCHes) -> {r.status_code}")

        h = c.session.head(f"{base}/manifests/v1",
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        subj_digest = h.headers["Docker-Content-Digest"]
        subj_size = int(h.headers["Content-Length"])
        manifest = c.get_manifest(f"{b.pull_host}/artifacts/thing:v1")
        check(manifest["config"]["mediaType"] == ART_TYPE, "config.mediaType is the artifact type")
        raw = c.session.get(f"{base}/manifests/{subj_digest}").content
        check("sha256:" + hashlib.sha256(raw).hexdigest() == subj_digest, "manifest bytes match digest")

        subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json",
                                   digest=subj_digest, size=subj_size)
        r = c.push(target=f"{b.host}/artifacts/thing:sig", files=["sig.txt"],
                   manifest_config=f"sig.json:{SIG_TYPE}", subject=subject, quiet=True)
        check(r.status_code == 201 and r.headers.get("OCI-Subject") == subj_digest,
              f"push referrer with subject -> {r.status_code}, OCI-Subject {r.headers.get('OCI-Subject')}")
        sig_digest = r.headers["Docker-Content-Digest"]

        r = c.session.get(f"{base}/referrers/{subj_digest}")
        idx = r.json()
        check(r.status_code == 200 and r.headers.get("Content-Type") == "application/vnd.oci.image.index.v1+json",
              "referrers API answers an OCI index")
        found = [m for m in idx["manifests"] if m["digest"] == sig_digest]
        check(len(found) == 1 and found[0].get("artifactType") == SIG_TYPE,
              f"referrer listed with artifactType {SIG_TYPE}: {idx['manifests']}")
        r = c.session.get(f"{base}/referrers/{subj_digest}", params={"artifactType": SIG_TYPE})
        check(r.headers.get("OCI-Filters-Applied") == "artifactType"
              and [m["digest"] for m in r.json()["manifests"]] == [sig_digest], "artifactType filter")
        r = c.session.get(f"{base}/referrers/{subj_digest}", params={"artifactType": ART_TYPE})
        check(r.json()["manifests"] == [], "filter that matches nothing")

        os.makedirs("out")
        files = c.pull(target=f"{b.pull_host}/artifacts/thing:v1", outdir="out")
        got = {os.path.basename(f): open(f, "rb").read() for f in files}
        check(got.get("a.txt") == open("a.txt", "rb").read() and got.get("b.bin") == open("b.bin", "rb").read(),
              f"pull returns identical files {sorted(got)}")

        tags = c.get_tags(f"{b.pull_host}/artifacts/thing")
        check(sorted(tags) == ["sig", "v1", "v1-chunked"], f"tags {tags}")
        # oras-py delete_tag resolves the tag to a digest and deletes the manifest
        c.delete_tag(f"{b.host}/artifacts/thing", "v1-chunked")
        # (Another replica learns of a delete from the database's change notification.)
        for _ in range(20):
            tags = c.get_tags(f"{b.pull_host}/artifacts/thing")
            if "v1-chunked" not in tags:
                break
            time.sleep(0.1)
        check("v1-chunked" not in tags, f"tag deleted {tags}")
        # deleting the subject leaves the referrer reachable by digest
        r = c.session.delete(f"{wbase}/manifests/sig")
        check(r.status_code == 202, f"DELETE tag sig -> {r.status_code}")
        r = c.session.get(f"{base}/manifests/{sig_digest}")
        check(r.status_code == 200, "untagged referrer still served by digest")
    print("PASS oras.py")


if __name__ == "__main__":
    main()
