#!/usr/bin/env python3
"""Reproduction of the OCI distribution-spec v1.1 conformance suite against a registry.

Usage:  tests/conformance/run.py http://127.0.0.1:5000 [--namespace myorg/myrepo]
                                 [--crossmount-namespace NAME] [--automatic-crossmount true|false]
                                 [--no-extra] [-v]

It replays, in the suite's order, every request the official Go suite
(github.com/opencontainers/distribution-spec/conformance, v1.1: 00_conformance_suite_test.go
runs 01_pull_test.go, 02_push_test.go, 03_discovery_test.go, 04_management_test.go with the
data of setup.go) makes and checks every assertion it makes, with the same defaults
(OCI_DELETE_MANIFEST_BEFORE_BLOBS=true, OCI_AUTOMATIC_CROSSMOUNT unset). Requests are sent
the way Go's net/http sends them: no default Accept header, `Content-Length: 0` on a
body-less POST/PUT/PATCH (Go ignores a Content-Length *header* the suite sets without a body).

After the suite proper, an "extra" section checks the assertions of the older split files of
the suite (01_base_api_route, 04_blob_upload_chunked "PUT with final chunk", 07_error_codes,
06_tags_list) and spec edge cases real clients rely on (ranges, empty blob, sha512, upload
cancel, HEAD headers, error bodies). Those are reported with an `extra/` prefix.

Prints one line per check (PASS/FAIL/SKIP), then `N passed, M failed`; exit status 1 when any
check failed.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import string
import sys
import uuid
from urllib.parse import urlsplit

import requests

# --------------------------------------------------------------------------------------
# harness


class Ctx:
    def __init__(self, base, namespace, crossmount, auto_crossmount, verbose):
        self.base = base.rstrip("/")
        self.ns = namespace
        self.cm = crossmount
        self.auto_crossmount = auto_crossmount  # None = env var unset (the default)
        self.verbose = verbose
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.failures = []
        self.s = requests.Session()
        # Go's client sends no Accept and no Accept-Encoding beyond gzip; keep it minimal.
        self.s.headers.clear()
        self.s.headers["User-Agent"] = "distribution-spec-conformance-tests"

    def url(self, path):
        path = path.replace("<name>", self.ns)
        return self.base + path

    def req(self, method, path, headers=None, params=None, body=None, name=None):
        if name is not None:
            path = path.replace("<name>", name)
        h = dict(headers or {})
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""  # Go: Content-Length: 0, whatever header the test set
        if body is not None:
            h["Content-Length"] = str(len(body))
        r = self.s.request(method, self.url(path), headers=h, params=params, data=body,
                           allow_redirects=True, timeout=30)
        if self.verbose:
            print(f"    > {method} {r.request.url} -> {r.status_code} {dict(r.headers)}")
        return r

    def check(self, where, name, ok, detail=""):
        label = f"{where} :: {name}"
        if ok:
            self.passed += 1
            print(f"PASS {label}")
        else:
            self.failed += 1
            self.failures.append((label, detail))
            print(f"FAIL {label}\n     {detail}")
        return ok

    def skip(self, where, name, why):
        self.skipped += 1
        print(f"SKIP {where} :: {name} ({why})")


def rel_location(resp):
    """reggie's GetRelativeLocation: the path (and query) of Location."""
    loc = resp.headers.get("Location", "")
    if not loc:
        return ""
    p = urlsplit(loc)
    out = p.path
    if p.query:
        out += "?" + p.query
    return out


def desc(r):
    ct = r.headers.get("Content-Type", "")
    if not r.content:
        body = ""
    elif "json" in ct or "text" in ct:
        body = r.text[:300]
    else:
        body = f"<{len(r.content)} bytes>"
    keep = {k: v for k, v in r.headers.items()
            if k.lower() in ("location", "range", "docker-content-digest", "content-type",
                             "oci-subject", "oci-filters-applied", "content-range",
                             "content-length", "link", "docker-upload-uuid")}
    return f"{r.request.method} {r.request.url} -> {r.status_code} {keep} {body!r}"


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def gojson(obj):
    """json.MarshalIndent(v, "", "\\t")."""
    return json.dumps(obj, indent="\t", separators=(",", ": "), ensure_ascii=False).encode()


def b64(b):
    return base64.b64encode(b).decode()


def is2xx(c):
    return 200 <= c < 300


# --------------------------------------------------------------------------------------
# test data, as setup.go builds it

LAYER_B64 = ("H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0"
             "WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD"
             "jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA")
ANN_KEY = "org.opencontainers.conformance.test"
TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
TYPE_INDEX = "application/vnd.food.stand"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ERROR_CODES = {"BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
               "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN",
               "MANIFEST_UNVERIFIED", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID",
               "TAG_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED"}


def descriptor(media_type, content=None, digest=None, size=None, data=None, unspecified=None):
    d = {"mediaType": media_type,
         "digest": digest if digest else sha256(content),
         "size": size if size is not None else len(content)}
    if data is not None:
        d["data"] = b64(data)
    d["newUnspecifiedField"] = b64(unspecified) if unspecified is not None else None
    return d


class Data:
    def __init__(self):
        rnd = random.Random()
        letters = string.digits + string.ascii_uppercase + string.ascii_lowercase + "-"
        self.configs = []
        for _ in range(5):
            author = "".join(rnd.choice(letters) for _ in range(16))
            cfg = {"author": author, "architecture": "amd64", "os": "linux",
                   "rootfs": {"type": "layers", "diff_ids": []}}
            c = gojson(cfg)
            self.configs.append((c, sha256(c)))
        self.layer = base64.b64decode(LAYER_B64)
        self.layer_digest = sha256(self.layer)
        layers = [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", self.layer)]
        self.manifests = []
        for i in range(5):
            m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "config": descriptor("application/vnd.oci.image.config.v1+json",
                                      self.configs[i][0], data=self.configs[i][0],
                                      unspecified=b"hello world"),
                 "layers": layers}
            c = gojson(m)
            self.manifests.append((c, sha256(c)))
        # push test: manifest with no layers and no mediaType
        m = {"schemaVersion": 2,
             "config": descriptor("application/vnd.oci.image.config.v1+json", self.configs[1][0],
                                  data=self.configs[1][0], unspecified=b"hello world"),
             "layers": []}
        self.empty_layer_manifest = gojson(m)
        self.empty_layer_manifest_digest = sha256(self.empty_layer_manifest)
        self.blobA = os.urandom(42)
        self.blobA_digest = sha256(self.blobA)
        self.blobB = os.urandom(42)
        self.blobB_digest = sha256(self.blobB)
        self.chunk1 = self.blobB[:22]
        self.chunk2 = self.blobB[22:]
        self.chunk1_range = f"0-{len(self.chunk1) - 1}"
        self.chunk2_range = f"{len(self.chunk1)}-{len(self.blobB) - 1}"
        self.dummy = sha256(b"hello world")
        self.empty_json = b"{}"
        self.empty_json_desc = descriptor("application/vnd.oci.empty.v1+json", self.empty_json)
        self.refA = b"NHL Peanut Butter on my NHL bagel"
        self.refB = b"NBA Strawberry Jam on my NBA croissant"
        self.ann = {}
        m4 = self.manifests[4][0]
        m3 = self.manifests[3][0]
        subj4 = descriptor(OCI_MANIFEST, m4)
        subj3 = descriptor(OCI_MANIFEST, m3)

        def art(artifact_type, config, layers, subject, note):
            m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
            if artifact_type:
                m["artifactType"] = artifact_type
            m["config"] = config
            m["layers"] = layers
            m["subject"] = subject
            if note:
                m["annotations"] = {ANN_KEY: note}
            c = gojson(m)
            d = sha256(c)
            if note:
                self.ann[d] = note
            return c, d

        self.refAConfig = art(None, descriptor(TYPE_A, self.refA), [self.empty_json_desc], subj4,
                              "test config a")
        self.refBConfig = art(None, descriptor(TYPE_B, self.refB), [self.empty_json_desc], subj4,
                              "test config b")
        self.refALayer = art(TYPE_A, self.empty_json_desc, [descriptor(TYPE_A, self.refA)], subj4,
                             "test layer a")
        self.refBLayer = art(TYPE_B, self.empty_json_desc, [descriptor(TYPE_B, self.refB)], subj4,
                             "test layer b")
        self.refCLayer = art(TYPE_B, self.empty_json_desc, [descriptor(TYPE_B, self.refB)], subj3,
                             None)
        idx = {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": TYPE_INDEX,
               "manifests": [descriptor(OCI_MANIFEST, self.refAConfig[0]),
                             descriptor(OCI_MANIFEST, self.refALayer[0])],
               "subject": subj4, "annotations": {ANN_KEY: "test index"}}
        self.refIndex = (gojson(idx), sha256(gojson(idx)))
        self.ann[self.refIndex[1]] = "test index"


# --------------------------------------------------------------------------------------
# helpers shared by setups


def push_blob(c, content, digest, name=None):
    """POST then PUT ?digest= with the whole body (the suite's 'Populate registry' steps)."""
    r = c.req("POST", "/v2/<name>/blobs/uploads/", name=name)
    r2 = c.req("PUT", rel_location(r) or "/v2/<name>/blobs/uploads/MISSING-LOCATION",
               headers={"Content-Type": "application/octet-stream"},
               params={"digest": digest}, body=content)
    return r, r2


def put_manifest(c, ref, content, ctype=OCI_MANIFEST):
    return c.req("PUT", f"/v2/<name>/manifests/{ref}", headers={"Content-Type": ctype}, body=content)


# --------------------------------------------------------------------------------------
# 01_pull_test.go


def test01_pull(c, d):
    W = "01_pull_test.go Pull"
    tag = "tagtest0"
    for i in (0, 1):
        r1, r = push_blob(c, *d.configs[i])
        c.check(W, f"Setup/Populate registry with test blob (config[{i}])", is2xx(r.status_code), desc(r))
    r1, r = push_blob(c, d.layer, d.layer_digest)
    c.check(W, "Setup/Populate registry with test layer", is2xx(r.status_code), desc(r))
    r = put_manifest(c, tag, d.manifests[0][0])
    c.check(W, "Setup/Populate registry with test manifest (tag tagtest0)", is2xx(r.status_code), desc(r))
    r = put_manifest(c, d.manifests[1][1], d.manifests[1][0])
    c.check(W, "Setup/Populate registry with test manifest (by digest)", is2xx(r.status_code), desc(r))

    r = c.req("HEAD", f"/v2/<name>/blobs/{d.dummy}")
    c.check(W, "Pull blobs/HEAD request to nonexistent blob should result in 404 response",
            r.status_code == 404, desc(r))
    r = c.req("HEAD", f"/v2/<name>/blobs/{d.configs[0][1]}")
    h = r.headers.get("Docker-Content-Digest")
    c.check(W, "Pull blobs/HEAD request to existing blob should yield 200",
            r.status_code == 200 and (not h or h == d.configs[0][1]), desc(r))
    r = c.req("GET", f"/v2/<name>/blobs/{d.dummy}")
    c.check(W, "Pull blobs/GET nonexistent blob should result in 404 response", r.status_code == 404, desc(r))
    r = c.req("GET", f"/v2/<name>/blobs/{d.configs[0][1]}")
    c.check(W, "Pull blobs/GET request to existing blob URL should yield 200", r.status_code == 200, desc(r))

    acc = {"Accept": OCI_MANIFEST}
    r = c.req("HEAD", "/v2/<name>/manifests/.INVALID_MANIFEST_NAME")
    c.check(W, "Pull manifests/HEAD request to nonexistent manifest should return 404",
            r.status_code == 404, desc(r))
    for i in (0, 1):
        r = c.req("HEAD", f"/v2/<name>/manifests/{d.manifests[i][1]}", headers=acc)
        h = r.headers.get("Docker-Content-Digest")
        c.check(W, f"Pull manifests/HEAD request to manifest[{i}] path (digest) should yield 200 response",
                r.status_code == 200 and (not h or h == d.manifests[i][1]), desc(r))
    r = c.req("HEAD", f"/v2/<name>/manifests/{tag}", headers=acc)
    h = r.headers.get("Docker-Content-Digest")
    c.check(W, "Pull manifests/HEAD request to manifest path (tag) should yield 200 response",
            r.status_code == 200 and (not h or h == d.manifests[0][1]), desc(r))
    r = c.req("GET", "/v2/<name>/manifests/.INVALID_MANIFEST_NAME")
    c.check(W, "Pull manifests/GET nonexistent manifest should return 404", r.status_code == 404, desc(r))
    for i in (0, 1):
        r = c.req("GET", f"/v2/<name>/manifests/{d.manifests[i][1]}", headers=acc)
        c.check(W, f"Pull manifests/GET request to manifest[{i}] path (digest) should yield 200 response",
                r.status_code == 200, desc(r))
    r = c.req("GET", f"/v2/<name>/manifests/{tag}", headers=acc)
    c.check(W, "Pull manifests/GET request to manifest path (tag) should yield 200 response",
            r.status_code == 200, desc(r))

    r = c.req("GET", "/v2/<name>/manifests/sha256:totallywrong",
              headers={"Content-Type": OCI_MANIFEST}, body=b"blablabla")
    ok = r.status_code in (400, 404)
    if r.status_code == 400:
        try:
            ok = r.json()["errors"][0]["code"] in ERROR_CODES
        except Exception:
            ok = False
    c.check(W, "Error codes/400 response body should contain OCI-conforming JSON message", ok, desc(r))

    # Teardown (deleteManifestBeforeBlobs = true)
    for i in (0, 1):
        r = c.req("DELETE", f"/v2/<name>/manifests/{d.manifests[i][1]}")
        c.check(W, f"Teardown/Delete manifest[{i}] created in setup",
                is2xx(r.status_code) or r.status_code == 405, desc(r))
    for i in (0, 1):
        r = c.req("DELETE", f"/v2/<name>/blobs/{d.configs[i][1]}")
        c.check(W, f"Teardown/Delete config[{i}] blob created in setup",
                is2xx(r.status_code) or r.status_code in (404, 405), desc(r))
    r = c.req("DELETE", f"/v2/<name>/blobs/{d.layer_digest}")
    c.check(W, "Teardown/Delete layer blob created in setup",
            is2xx(r.status_code) or r.status_code in (404, 405), desc(r))


# --------------------------------------------------------------------------------------
# 02_push_test.go


def test02_push(c, d):
    W = "02_push_test.go Push"
    octet = {"Content-Type": "application/octet-stream"}
    # Blob Upload Streamed
    r = c.req("POST", "/v2/<name>/blobs/uploads/")
    loc_ok = bool(r.headers.get("Location"))
    r2 = c.req("PATCH", rel_location(r) or "/v2/<name>/blobs/uploads/x", headers=octet, body=d.blobA)
    c.check(W, "Blob Upload Streamed/PATCH request with blob in body should yield 202 response",
            loc_ok and r2.status_code == 202, f"POST: {desc(r)} | PATCH: {desc(r2)}")
    last = r2
    # The suite sets a Content-Length header of 42 but sends no body: Go writes Content-Length: 0.
    r = c.req("PUT", rel_location(last), headers=octet, params={"digest": d.blobA_digest})
    c.check(W, "Blob Upload Streamed/PUT request to session URL with digest should yield 201 response",
            r.status_code == 201 and bool(r.headers.get("Location")), desc(r))

    # Blob Upload Monolithic
    r = c.req("GET", f"/v2/<name>/blobs/{d.dummy}")
    c.check(W, "Blob Upload Monolithic/GET nonexistent blob should result in 404 response",
            r.status_code == 404, desc(r))
    r = c.req("POST", "/v2/<name>/blobs/uploads/", headers=octet,
              params={"digest": d.configs[1][1]}, body=d.configs[1][0])
    c.check(W, "Blob Upload Monolithic/POST request with digest and blob should yield a 201 or 202",
            bool(r.headers.get("Location")) and r.status_code in (201, 202), desc(r))
    last = r
    r = c.req("GET", f"/v2/<name>/blobs/{d.configs[1][1]}")
    want = 404 if last.status_code == 202 else 200
    c.check(W, "Blob Upload Monolithic/GET request to blob URL from prior request should yield 200 or 404 based on response code",
            r.status_code == want, desc(r))
    r = c.req("POST", "/v2/<name>/blobs/uploads/")
    c.check(W, "Blob Upload Monolithic/POST request should yield a session ID", r.status_code == 202, desc(r))
    last = r
    r = c.req("PUT", rel_location(last), headers=octet, params={"digest": d.configs[1][1]},
              body=d.configs[1][0])
    c.check(W, "Blob Upload Monolithic/PUT upload of a blob should yield a 201 Response",
            r.status_code == 201 and bool(r.headers.get("Location")), desc(r))
    r = c.req("GET", f"/v2/<name>/blobs/{d.configs[1][1]}")
    c.check(W, "Blob Upload Monolithic/GET request to existing blob should yield 200 response",
            r.status_code == 200, desc(r))
    r1, r = push_blob(c, d.layer, d.layer_digest)
    c.check(W, "Blob Upload Monolithic/PUT upload of a layer blob should yield a 201 Response",
            r.status_code == 201 and bool(r.headers.get("Location")), desc(r))
    r = c.req("GET", f"/v2/<name>/blobs/{d.layer_digest}")
    c.check(W, "Blob Upload Monolithic/GET request to existing layer should yield 200 response",
            r.status_code == 200, desc(r))

    # Blob Upload Chunked
    r = c.req("POST", "/v2/<name>/blobs/uploads/")
    loc_ok = bool(r.headers.get("Location"))
    minlen = r.headers.get("OCI-Chunk-Min-Length")
    if minlen and int(minlen) > len(d.chunk1):
        c.check(W, "Blob Upload Chunked/(OCI-Chunk-Min-Length handling not reproduced)", False,
                f"registry asks for OCI-Chunk-Min-Length {minlen}; this script uses 22-byte chunks")
    r2 = c.req("PATCH", rel_location(r), headers={**octet, "Content-Range": d.chunk2_range}, body=d.chunk2)
    c.check(W, "Blob Upload Chunked/Out-of-order blob upload should return 416",
            loc_ok and r2.status_code == 416, f"POST: {desc(r)} | PATCH: {desc(r2)}")
    r = c.req("POST", "/v2/<name>/blobs/uploads/")
    loc_ok = bool(r.headers.get("Location"))
    prev = r
    r2 = c.req("PATCH", rel_location(r), headers={**octet, "Content-Range": d.chunk1_range}, body=d.chunk1)
    c.check(W, "Blob Upload Chunked/PATCH request with first chunk should return 202",
            loc_ok and r2.status_code == 202 and r2.headers.get("Range") == d.chunk1_range, desc(r2))
    last = r2
    r = c.req("PATCH", rel_location(prev), headers={**octet, "Content-Range": d.chunk1_range}, body=d.chunk1)
    c.check(W, "Blob Upload Chunked/Retry previous blob chunk should return 416", r.status_code == 416, desc(r))
    r = c.req("GET", rel_location(prev))
    c.check(W, "Blob Upload Chunked/Get on stale blob upload should return 204 with a range and location",
            r.status_code == 204 and bool(r.headers.get("Location"))
            and r.headers.get("Range") == d.chunk1_range, desc(r))
    last = r
    r = c.req("PATCH", rel_location(last), headers={**octet, "Content-Range": d.chunk2_range}, body=d.chunk2)
    c.check(W, "Blob Upload Chunked/PATCH request with second chunk should return 202",
            r.status_code == 202 and bool(r.headers.get("Location")), desc(r))
    last = r
    r = c.req("PUT", rel_location(last), headers=octet, params={"digest": d.blobB_digest})
    c.check(W, "Blob Upload Chunked/PUT request with digest should return 201",
            r.status_code == 201 and bool(r.headers.get("Location")), desc(r))

    # Cross-Repository Blob Mount
    r = c.req("POST", "/v2/<name>/blobs/uploads/", name=c.cm, params={"mount": d.dummy})
    c.check(W, "Cross-Repository Blob Mount/Cross-mounting of a blob without the from argument should yield session id",
            r.status_code == 202 and bool(r.headers.get("Location")), desc(r))
    r = c.req("POST", "/v2/<name>/blobs/uploads/", name=c.cm,
              params={"mount": d.blobA_digest, "from": c.ns})
    c.check(W, "Cross-Repository Blob Mount/POST request to mount another repository's blob should return 201 or 202",
            r.status_code in (201, 202), desc(r))
    last = r
    if last.status_code == 201:
        want = f"/v2/{c.cm}/blobs/{d.blobA_digest}"
        r = c.req("GET", rel_location(last))
        c.check(W, "Cross-Repository Blob Mount/GET request to test digest within cross-mount namespace should return 200",
                rel_location(last) == want and r.status_code == 200,
                f"Location {rel_location(last)!r} (want {want!r}); GET: {desc(r)}")
    else:
        c.skip(W, "Cross-Repository Blob Mount/GET request to test digest within cross-mount namespace should return 200",
               "mount was not 201")
    if last.status_code == 202:
        c.check(W, "Cross-Repository Blob Mount/Cross-mounting of nonexistent blob should yield session id",
                rel_location(last).startswith(f"/v2/{c.cm}/blobs/uploads/"), desc(last))
    if c.auto_crossmount is not None and last.status_code == 201:
        r = c.req("POST", "/v2/<name>/blobs/uploads/", name=c.cm, params={"mount": d.blobA_digest})
        if c.auto_crossmount:
            c.check(W, "Cross-Repository Blob Mount/Cross-mounting without from, and automatic content discovery enabled should return a 201",
                    r.status_code == 201, desc(r))
        else:
            c.check(W, "Cross-Repository Blob Mount/Cross-mounting without from, and automatic content discovery disabled should return a 202",
                    r.status_code == 202, desc(r))
    else:
        c.skip(W, "Cross-Repository Blob Mount/Cross-mounting without from (automatic content discovery)",
               "OCI_AUTOMATIC_CROSSMOUNT unset (suite default); use --automatic-crossmount")

    # Manifest Upload
    r = c.req("GET", "/v2/<name>/manifests/.INVALID_MANIFEST_NAME")
    c.check(W, "Manifest Upload/GET nonexistent manifest should return 404", r.status_code == 404, desc(r))
    oks, dets = True, []
    for i in range(4):
        r = put_manifest(c, f"test{i}", d.manifests[1][0])
        if not (r.status_code == 201 and r.headers.get("Location")):
            oks = False
            dets.append(desc(r))
    c.check(W, "Manifest Upload/PUT should accept a manifest upload", oks, " | ".join(dets))
    r = put_manifest(c, "emptylayer", d.empty_layer_manifest)
    empty_ref = ""
    if r.status_code == 201:
        empty_ref = r.headers.get("Location", "")
        c.check(W, "Manifest Upload/Registry should accept a manifest upload with no layers",
                bool(empty_ref), desc(r))
    else:
        c.check(W, "Manifest Upload/Registry should accept a manifest upload with no layers "
                "(suite only warns; counted as failure here)", False, desc(r))
    r = c.req("GET", f"/v2/<name>/manifests/{d.manifests[1][1]}", headers={"Accept": OCI_MANIFEST})
    c.check(W, "Manifest Upload/GET request to manifest URL (digest) should yield 200 response",
            r.status_code == 200, desc(r))

    # Teardown
    r = c.req("DELETE", f"/v2/<name>/manifests/{d.manifests[1][1]}")
    ok = is2xx(r.status_code) or r.status_code == 405
    det = desc(r)
    if empty_ref:
        r = c.req("DELETE", f"/v2/<name>/manifests/{d.empty_layer_manifest_digest}")
        ok = ok and (is2xx(r.status_code) or r.status_code == 405)
        det += " | " + desc(r)
    c.check(W, "Teardown/Delete manifest created in tests", ok, det)
    r = c.req("DELETE", f"/v2/<name>/blobs/{d.configs[1][1]}")
    c.check(W, "Teardown/Delete config blob created in tests",
            is2xx(r.status_code) or r.status_code in (404, 405), desc(r))
    r = c.req("DELETE", f"/v2/<name>/blobs/{d.layer_digest}")
    c.check(W, "Teardown/Delete layer blob created in setup",
            is2xx(r.status_code) or r.status_code in (404, 405), desc(r))


# --------------------------------------------------------------------------------------
# 03_discovery_test.go


def tags_of(r):
    try:
        return r.json().get("tags") or []
    except Exception:
        return []


def test03_discovery(c, d):
    W = "03_discovery_test.go Content Discovery"
    r1, r = push_blob(c, *d.configs[2])
    c.check(W, "Setup/Populate registry with test blob", is2xx(r.status_code), desc(r))
    r1, r = push_blob(c, d.layer, d.layer_digest)
    c.check(W, "Setup/Populate registry with test layer", is2xx(r.status_code), desc(r))
    oks, dets = True, []
    for i in range(4):
        r = put_manifest(c, f"test{i}", d.manifests[2][0])
        if not is2xx(r.status_code):
            oks, _ = False, dets.append(desc(r))
    c.check(W, "Setup/Populate registry with test tags", oks, " | ".join(dets))

    # References setup: one spec, every step asserted in order
    steps = []

    def step(label, r, want_subject=None):
        ok = is2xx(r.status_code)
        if want_subject is not None:
            ok = ok and r.headers.get("OCI-Subject") == want_subject
        steps.append((label, ok, desc(r)))

    m4d, m3d = d.manifests[4][1], d.manifests[3][1]
    step("empty JSON blob", push_blob(c, d.empty_json, d.empty_json_desc["digest"])[1])
    step("ref blob A", push_blob(c, d.refA, sha256(d.refA))[1])
    step("refsManifestAConfigArtifact (OCI-Subject)", put_manifest(c, d.refAConfig[1], d.refAConfig[0]), m4d)
    step("refsManifestALayerArtifact (OCI-Subject)", put_manifest(c, d.refALayer[1], d.refALayer[0]), m4d)
    step("refsIndexArtifact (OCI-Subject)", put_manifest(c, d.refIndex[1], d.refIndex[0], OCI_INDEX), m4d)
    step("config[4] blob", push_blob(c, *d.configs[4])[1])
    step("layer blob", push_blob(c, d.layer, d.layer_digest)[1])
    step("manifest[4] tagtest0", put_manifest(c, "tagtest0", d.manifests[4][0]))
    step("ref blob B", push_blob(c, d.refB, sha256(d.refB))[1])
    step("refsManifestBConfigArtifact (OCI-Subject)", put_manifest(c, d.refBConfig[1], d.refBConfig[0]), m4d)
    step("refsManifestBLayerArtifact (OCI-Subject)", put_manifest(c, d.refBLayer[1], d.refBLayer[0]), m4d)
    step("refsManifestCLayerArtifact, subject not pushed (OCI-Subject)",
         put_manifest(c, d.refCLayer[1], d.refCLayer[0]), m3d)
    bad = [f"[{l}] {det}" for l, ok, det in steps if not ok]
    c.check(W, "Setup/References setup", not bad, " | ".join(bad))

    # listing tags
    r = c.req("GET", "/v2/<name>/tags/list")
    c.check(W, "Test content discovery endpoints (listing tags)/GET request to list tags should yield 200 response",
            r.status_code == 200, desc(r))
    tag_list = tags_of(r)
    num = len(tag_list)
    half = num // 2
    r = c.req("GET", "/v2/<name>/tags/list", params={"n": str(half)})
    c.check(W, "Test content discovery endpoints (listing tags)/GET number of tags should be limitable by `n` query parameter",
            r.status_code == 200 and len(tags_of(r)) == half, f"n={half} of {tag_list}: {desc(r)}")
    r = c.req("GET", "/v2/<name>/tags/list", params={"n": str(half)})
    tl = tags_of(r)
    ok = len(tl) >= half and half > 0
    if ok:
        r = c.req("GET", "/v2/<name>/tags/list", params={"n": str(half), "last": tl[half - 1]})
        ok = r.status_code == 200 and len(tl) <= half
    c.check(W, "Test content discovery endpoints (listing tags)/GET start of tag is set by `last` query parameter",
            ok, desc(r))

    # listing referrers
    def index_of(r):
        try:
            return r.json()
        except Exception:
            return {}

    ct_ok = lambda r: r.headers.get("Content-Type") == OCI_INDEX
    W2 = "Test content discovery endpoints (listing references)"
    r = c.req("GET", f"/v2/<name>/referrers/{d.dummy}")
    ix = index_of(r)
    c.check(W, f"{W2}/GET request to nonexistent blob should result in empty 200 response",
            r.status_code == 200 and ct_ok(r) and len(ix.get("manifests") or []) == 0, desc(r))

    def anns_ok(ms):
        for m in ms:
            a = m.get("annotations") or {}
            if len(a) != 1 or a.get(ANN_KEY) != d.ann.get(m.get("digest")):
                return False
        return True

    r = c.req("GET", f"/v2/<name>/referrers/{m4d}")
    ms = index_of(r).get("manifests") or []
    c.check(W, f"{W2}/GET request to existing blob should yield 200",
            r.status_code == 200 and ct_ok(r) and len(ms) == 5 and ms[0].get("digest") != ms[1].get("digest")
            and anns_ok(ms), desc(r) + f" ({len(ms)} manifests)")
    r = c.req("GET", f"/v2/<name>/referrers/{m4d}", params={"artifactType": TYPE_A})
    ms = index_of(r).get("manifests") or []
    if r.headers.get("OCI-Filters-Applied"):
        ok = len(ms) == 2 and r.headers.get("OCI-Filters-Applied") == "artifactType" and anns_ok(ms)
    else:
        ok = len(ms) == 5 and anns_ok(ms)
    c.check(W, f"{W2}/GET request to existing blob with filter should yield 200",
            r.status_code == 200 and ct_ok(r) and ok, desc(r))
    r = c.req("GET", f"/v2/<name>/referrers/{m3d}")
    ms = index_of(r).get("manifests") or []
    c.check(W, f"{W2}/GET request to missing manifest should yield 200",
            r.status_code == 200 and ct_ok(r) and len(ms) == 1 and ms[0].get("digest") == d.refCLayer[1],
            desc(r))

    # Teardown (deleteManifestBeforeBlobs)
    refs = [d.refIndex[1], d.manifests[2][1], m4d, d.refAConfig[1], d.refALayer[1], "tagtest0",
            d.refBConfig[1], d.refBLayer[1], d.refCLayer[1]]
    bad = []
    for ref in refs:
        r = c.req("DELETE", f"/v2/<name>/manifests/{ref}")
        if not (is2xx(r.status_code) or r.status_code in (404, 405)):
            bad.append(desc(r))
    c.check(W, "Teardown/Delete created manifest & associated tags", not bad, " | ".join(bad))
    r = c.req("DELETE", f"/v2/<name>/blobs/{d.configs[2][1]}")
    c.check(W, "Teardown/Delete config blob created in tests",
            is2xx(r.status_code) or r.status_code == 405, desc(r))
    r = c.req("DELETE", f"/v2/<name>/blobs/{d.layer_digest}")
    c.check(W, "Teardown/Delete layer blob created in setup",
            is2xx(r.status_code) or r.status_code == 405, desc(r))
    bad = []
    for ref in [d.refIndex[1], d.refAConfig[1], d.refALayer[1], m4d, d.refBConfig[1], d.refBLayer[1]]:
        r = c.req("DELETE", f"/v2/<name>/manifests/{ref}")
        if not (is2xx(r.status_code) or r.status_code in (404, 405)):
            bad.append(desc(r))
    for dg in [d.configs[4][1], sha256(d.refA), sha256(d.refB), d.empty_json_desc["digest"]]:
        r = c.req("DELETE", f"/v2/<name>/blobs/{dg}")
        if not (is2xx(r.status_code) or r.status_code in (404, 405)):
            bad.append(desc(r))
    c.check(W, "Teardown/References teardown", not bad, " | ".join(bad))


# --------------------------------------------------------------------------------------
# 04_management_test.go


def test04_management(c, d):
    W = "04_management_test.go Content Management"
    r1, r = push_blob(c, *d.configs[3])
    c.check(W, "Setup/Populate registry with test config blob", is2xx(r.status_code), desc(r))
    r1, r = push_blob(c, d.layer, d.layer_digest)
    c.check(W, "Setup/Populate registry with test layer", is2xx(r.status_code), desc(r))
    r = put_manifest(c, "tagtest0", d.manifests[3][0])
    c.check(W, "Setup/Populate registry with test tag", is2xx(r.status_code), desc(r))
    r = c.req("GET", "/v2/<name>/tags/list")
    num = len(tags_of(r))
    c.check(W, "Setup/Check how many tags there are before anything gets deleted",
            r.status_code == 200, desc(r) + f" ({num} tags)")

    r = c.req("DELETE", "/v2/<name>/manifests/tagtest0")
    ok = r.status_code in (400, 202, 405)
    if r.status_code == 400:
        try:
            ok = r.json()["errors"][0]["code"] == "UNSUPPORTED"
        except Exception:
            ok = False
    c.check(W, "Manifest delete/DELETE request to manifest tag should return 202, unless tag deletion is disallowed (400/405)",
            ok, desc(r))
    r = c.req("DELETE", f"/v2/<name>/manifests/{d.manifests[3][1]}")
    c.check(W, "Manifest delete/DELETE request to manifest (digest) should yield 202 response unless already deleted",
            r.status_code in (202, 404), desc(r))
    r = c.req("GET", f"/v2/<name>/manifests/{d.manifests[3][1]}")
    c.check(W, "Manifest delete/GET request to deleted manifest URL should yield 404 response, unless delete is disallowed",
            r.status_code in (404, 200), desc(r))
    r = c.req("GET", "/v2/<name>/tags/list")
    try:
        parsed = r.json()
        tl = parsed.get("tags") or []
        ok = r.status_code == 200 and len(tl) < num
    except Exception:
        ok = False
    c.check(W, "Manifest delete/GET request to tags list should reflect manifest deletion", ok,
            desc(r) + f" (before: {num} tags)")

    blob_delete_allowed = True
    r = c.req("DELETE", f"/v2/<name>/blobs/{d.configs[3][1]}")
    ok = r.status_code in (202, 404, 405)
    det = desc(r)
    r = c.req("DELETE", f"/v2/<name>/blobs/{d.layer_digest}")
    ok = ok and r.status_code in (202, 404, 405)
    det += " | " + desc(r)
    if r.status_code == 405:
        blob_delete_allowed = False
    c.check(W, "Blob delete/DELETE request to blob URL should yield 202 response", ok, det)
    if blob_delete_allowed:
        r = c.req("GET", f"/v2/<name>/blobs/{d.configs[3][1]}")
        c.check(W, "Blob delete/GET request to deleted blob URL should yield 404 response",
                r.status_code == 404, desc(r))
    else:
        c.skip(W, "Blob delete/GET request to deleted blob URL should yield 404 response",
               "layer blob delete answered 405, the suite skips this")


# --------------------------------------------------------------------------------------
# extra: older split files of the suite and spec edge cases


def test_extra(c, d):
    W = "extra"
    octet = {"Content-Type": "application/octet-stream"}
    ns = c.ns
    r = c.req("GET", "/v2/")
    c.check(W, "01_base_api_route_test.go/GET request to base API route must return 200 response",
            r.status_code == 200, desc(r))

    # 04_blob_upload_chunked_test.go (older): last chunk sent with the PUT, with Content-Range
    blob = os.urandom(50)
    r = c.req("POST", "/v2/<name>/blobs/uploads/")
    r2 = c.req("PATCH", rel_location(r), headers={**octet, "Content-Range": "0-24"}, body=blob[:25])
    r3 = c.req("PUT", rel_location(r2), headers={**octet, "Content-Range": "25-49"},
               params={"digest": sha256(blob)}, body=blob[25:])
    c.check(W, "04_blob_upload_chunked_test.go (pre-1.0)/PUT request with final chunk should return 201",
            r3.status_code == 201 and bool(r3.headers.get("Location")), desc(r3))
    r = c.req("GET", f"/v2/<name>/blobs/{sha256(blob)}")
    c.check(W, "chunked upload content round-trips", r.status_code == 200 and r.content == blob, desc(r))

    # PUT with no Content-Length header at all (chunked transfer encoding, empty body)
    blob2 = os.urandom(10)
    r = c.req("POST", "/v2/<name>/blobs/uploads/")
    r2 = c.req("PATCH", rel_location(r), headers=octet, body=blob2)
    r3 = c.s.put(c.base + rel_location(r2), params={"digest": sha256(blob2)},
                 data=iter([]), headers=octet)  # Transfer-Encoding: chunked, no bytes
    c.check(W, "PUT ?digest= closing a session with a chunked (no Content-Length) empty body -> 201",
            r3.status_code == 201, desc(r3))

    # monolithic POST with chunked transfer encoding (streaming clients)
    blob3 = os.urandom(100)
    r = c.s.post(c.url("/v2/<name>/blobs/uploads/"), params={"digest": sha256(blob3)},
                 data=iter([blob3[:50], blob3[50:]]), headers=octet)
    c.check(W, "monolithic POST ?digest= with Transfer-Encoding: chunked -> 201",
            r.status_code == 201, desc(r))

    # empty blob (zero bytes), monolithic and POST+PUT
    empty_d = sha256(b"")
    r = c.req("POST", "/v2/<name>/blobs/uploads/", params={"digest": empty_d}, headers=octet, body=b"")
    c.check(W, "empty blob: monolithic POST ?digest=sha256(empty) with Content-Length: 0 -> 201",
            r.status_code == 201, desc(r))
    r = c.req("POST", "/v2/<name>/blobs/uploads/")
    r2 = c.req("PUT", rel_location(r), params={"digest": empty_d}, headers=octet)
    c.check(W, "empty blob: POST + PUT ?digest=sha256(empty) -> 201", r2.status_code == 201, desc(r2))
    r = c.req("GET", f"/v2/<name>/blobs/{empty_d}")
    c.check(W, "empty blob: GET -> 200 with 0 bytes", r.status_code == 200 and r.content == b"", desc(r))
    r = c.req("HEAD", f"/v2/<name>/blobs/{empty_d}")
    c.check(W, "empty blob: HEAD -> 200, Content-Length: 0",
            r.status_code == 200 and r.headers.get("Content-Length") == "0", desc(r))

    # digest mismatch on PUT
    r = c.req("POST", "/v2/<name>/blobs/uploads/")
    r2 = c.req("PUT", rel_location(r), params={"digest": d.dummy}, headers=octet, body=b"not hello world")
    code = ""
    try:
        code = r2.json()["errors"][0]["code"]
    except Exception:
        pass
    c.check(W, "PUT with wrong digest -> 400 DIGEST_INVALID", r2.status_code == 400 and code == "DIGEST_INVALID",
            desc(r2))

    # ranged blob GET
    payload = bytes(range(200))
    r1, r = push_blob(c, payload, sha256(payload))
    r = c.req("GET", f"/v2/<name>/blobs/{sha256(payload)}", headers={"Range": "bytes=10-19"})
    c.check(W, "blob GET Range: bytes=10-19 -> 206 with Content-Range bytes 10-19/200",
            r.status_code == 206 and r.content == payload[10:20]
            and r.headers.get("Content-Range") == "bytes 10-19/200", desc(r))
    r = c.req("GET", f"/v2/<name>/blobs/{sha256(payload)}", headers={"Range": "bytes=500-"})
    c.check(W, "blob GET Range beyond end -> 416", r.status_code == 416, desc(r))
    r = c.req("HEAD", f"/v2/<name>/blobs/{sha256(payload)}")
    c.check(W, "blob HEAD: Content-Length and Docker-Content-Digest",
            r.status_code == 200 and r.headers.get("Content-Length") == "200"
            and r.headers.get("Docker-Content-Digest") == sha256(payload), desc(r))

    # sha512
    blob5 = os.urandom(33)
    d512 = "sha512:" + hashlib.sha512(blob5).hexdigest()
    r = c.req("POST", "/v2/<name>/blobs/uploads/", params={"digest": d512}, headers=octet, body=blob5)
    r2 = c.req("GET", f"/v2/<name>/blobs/{d512}")
    c.check(W, "sha512 blob: monolithic POST -> 201, GET -> 200",
            r.status_code == 201 and r2.status_code == 200 and r2.content == blob5, f"{desc(r)} | {desc(r2)}")

    # upload cancel
    r = c.req("POST", "/v2/<name>/blobs/uploads/")
    loc = rel_location(r)
    r2 = c.req("DELETE", loc)
    r3 = c.req("GET", loc)
    c.check(W, "upload cancel: DELETE session -> 204, then GET -> 404 BLOB_UPLOAD_UNKNOWN",
            r2.status_code in (202, 204) and r3.status_code == 404, f"{desc(r2)} | {desc(r3)}")

    # unknown upload id
    r = c.req("PATCH", "/v2/<name>/blobs/uploads/does-not-exist", headers=octet, body=b"x")
    c.check(W, "PATCH to unknown session -> 404 BLOB_UPLOAD_UNKNOWN", r.status_code == 404
            and "BLOB_UPLOAD_UNKNOWN" in r.text, desc(r))

    # manifest: push image, HEAD headers, content-type, tag delete error code
    cfg = gojson({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                  "author": uuid.uuid4().hex})
    push_blob(c, cfg, sha256(cfg))
    push_blob(c, d.layer, d.layer_digest)
    man = gojson({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                  "config": descriptor("application/vnd.oci.image.config.v1+json", cfg),
                  "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", d.layer)]})
    md = sha256(man)
    r = put_manifest(c, "extra1", man)
    c.check(W, "manifest PUT by tag -> 201, Location, Docker-Content-Digest",
            r.status_code == 201 and r.headers.get("Docker-Content-Digest") == md
            and bool(r.headers.get("Location")), desc(r))
    r = c.req("HEAD", "/v2/<name>/manifests/extra1", headers={"Accept": OCI_MANIFEST})
    c.check(W, "manifest HEAD: Content-Type, Content-Length, Docker-Content-Digest",
            r.status_code == 200 and r.headers.get("Content-Type") == OCI_MANIFEST
            and r.headers.get("Content-Length") == str(len(man))
            and r.headers.get("Docker-Content-Digest") == md, desc(r))
    r = c.req("GET", "/v2/<name>/manifests/extra1")
    c.check(W, "manifest GET without Accept returns the exact bytes",
            r.status_code == 200 and r.content == man, desc(r))
    r = put_manifest(c, "extra-missing",
                     gojson({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                             "config": descriptor("application/vnd.oci.image.config.v1+json", b"nope"),
                             "layers": []}))
    c.check(W, "manifest PUT referencing a missing blob -> 400 MANIFEST_BLOB_UNKNOWN",
            r.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in r.text, desc(r))
    r = c.req("PUT", "/v2/<name>/manifests/sha256:totallywrong", headers={"Content-Type": OCI_MANIFEST},
              body=b"blablabla")
    try:
        code = r.json()["errors"][0]["code"]
    except Exception:
        code = ""
    c.check(W, "07_error_codes_test.go/400 response body should contain OCI-conforming JSON message (PUT)",
            r.status_code == 400 and code in ERROR_CODES, desc(r))
    r = put_manifest(c, "invalid-json", b"blablabla")
    c.check(W, "manifest PUT with invalid JSON -> 400 MANIFEST_INVALID",
            r.status_code == 400 and "MANIFEST_INVALID" in r.text, desc(r))
    r = c.req("DELETE", "/v2/<name>/manifests/no-such-tag")
    try:
        code = r.json()["errors"][0]["code"]
    except Exception:
        code = ""
    c.check(W, "DELETE unknown tag -> 404 with an OCI error code", r.status_code == 404 and code in ERROR_CODES,
            desc(r))
    r = c.req("GET", f"/v2/<name>/manifests/{'a' * 129}")
    c.check(W, "GET manifest with a 129-char (invalid) tag -> 4xx with OCI error code",
            400 <= r.status_code < 500 and any(e in r.text for e in ERROR_CODES), desc(r))

    # tag list pagination (06_tags_list_test.go expects test3 after last=test1 with n=2)
    for t in ["p0", "p1", "p2", "p3", "p4"]:
        put_manifest(c, t, man)
    r = c.req("GET", "/v2/<name>/tags/list", params={"n": "2"})
    link = r.headers.get("Link", "")
    c.check(W, "tags list n=2 -> 2 tags and a Link rel=next", len(tags_of(r)) == 2 and 'rel="next"' in link,
            desc(r))
    if link:
        nxt = link.split(";")[0].strip().strip("<>")
        r2 = c.req("GET", nxt)
        c.check(W, "tags list: following Link returns the next page",
                r2.status_code == 200 and tags_of(r2) and tags_of(r2)[0] > tags_of(r)[-1], desc(r2))
    r = c.req("GET", "/v2/<name>/tags/list", params={"n": "0"})
    c.check(W, "tags list n=0 -> 200 with an empty list", r.status_code == 200 and tags_of(r) == [], desc(r))
    r = c.req("GET", "/v2/no/such/repo/tags/list")
    c.check(W, "tags list of unknown repository -> 404 NAME_UNKNOWN",
            r.status_code == 404 and "NAME_UNKNOWN" in r.text, desc(r))

    # catalog
    r = c.req("GET", "/v2/_catalog")
    try:
        repos = r.json().get("repositories") or []
    except Exception:
        repos = []
    c.check(W, "catalog lists the namespace", r.status_code == 200 and ns in repos, desc(r))

    # mount with from=repo lacking the blob -> 202 session
    r = c.req("POST", "/v2/<name>/blobs/uploads/", name=c.cm + "-x",
              params={"mount": d.dummy, "from": ns})
    c.check(W, "mount from a repo that lacks the blob -> 202 with a session Location",
            r.status_code == 202 and "/blobs/uploads/" in r.headers.get("Location", ""), desc(r))
    # mount with invalid from name
    r = c.req("POST", "/v2/<name>/blobs/uploads/", name=c.cm + "-y",
              params={"mount": sha256(payload), "from": "UPPER/Case"})
    c.check(W, "mount with an invalid from name -> 202 session (spec: fall back to an upload) or 400 NAME_INVALID",
            r.status_code in (202, 400), desc(r))

    # referrers on an index with subject, filter not matching
    r = c.req("GET", f"/v2/<name>/referrers/{md}", params={"artifactType": "application/x-none"})
    c.check(W, "referrers with a filter matching nothing -> 200 empty index, OCI-Filters-Applied",
            r.status_code == 200 and r.headers.get("OCI-Filters-Applied") == "artifactType"
            and (r.json().get("manifests") == []), desc(r))
    r = c.req("GET", "/v2/<name>/referrers/sha256:nothex")
    c.check(W, "referrers with an invalid digest -> 400", r.status_code == 400, desc(r))

    # new-style suite (conformance/run.go on main): "range requests" on a 2048-byte blob
    big = os.urandom(2048)
    push_blob(c, big, sha256(big))
    for rng, want, body, crange in [
        ("bytes=500-1499", 206, big[500:1500], "bytes 500-1499/2048"),
        ("bytes=500-", 206, big[500:], "bytes 500-2047/2048"),
        ("bytes=-500", 206, big[-500:], "bytes 1548-2047/2048"),
        ("bytes=2000-5000", 206, big[2000:], "bytes 2000-2047/2048"),
        ("bytes=500-0", 416, None, None),
        ("bytes=5000-10000", 416, None, None),
    ]:
        r = c.req("GET", f"/v2/<name>/blobs/{sha256(big)}", headers={"Range": rng})
        ok = r.status_code == want
        if ok and body is not None:
            ok = r.content == body and r.headers.get("Content-Range") == crange \
                and r.headers.get("Content-Length") == str(len(body))
        c.check(W, f"run.go (new suite)/range requests/{rng} -> {want}", ok, desc(r))

    # new-style suite: "bad-digest-image" (manifest PUT by digest whose bytes do not match)
    r = c.req("PUT", f"/v2/<name>/manifests/{md}", headers={"Content-Type": OCI_MANIFEST}, body=man + b"  ")
    c.check(W, "run.go (new suite)/bad-digest-image: PUT by digest with mismatching bytes -> 400 DIGEST_INVALID",
            r.status_code == 400 and "DIGEST_INVALID" in r.text, desc(r))
    # new-style suite: "large-manifest" (390 annotations of 10000 bytes, ~3.9 MB)
    large = gojson({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": descriptor("application/vnd.oci.image.config.v1+json", cfg),
                    "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", d.layer)],
                    "annotations": {f"large-annotation-{i}": "A" * 10000 for i in range(390)}})
    r = put_manifest(c, "large-manifest", large)
    r2 = c.req("GET", "/v2/<name>/manifests/large-manifest")
    c.check(W, f"run.go (new suite)/large-manifest: {len(large)}-byte manifest PUT -> 201, GET returns it",
            r.status_code == 201 and r2.status_code == 200 and r2.content == large, f"{desc(r)} | {r2.status_code}")
    # new-style suite: tag delete is atomic (HEAD on the tag -> 404 right after the DELETE)
    put_manifest(c, "to-delete", man)
    r = c.req("DELETE", "/v2/<name>/manifests/to-delete")
    r2 = c.req("HEAD", "/v2/<name>/manifests/to-delete")
    r3 = c.req("HEAD", f"/v2/<name>/manifests/{md}")
    c.check(W, "run.go (new suite)/tag delete -> 202, HEAD tag -> 404, manifest by digest still 200",
            r.status_code == 202 and r2.status_code == 404 and r3.status_code == 200,
            f"{desc(r)} | {desc(r2)} | {desc(r3)}")

    # cleanup of the extra data
    c.req("DELETE", f"/v2/<name>/manifests/{sha256(large)}")
    for t in ["extra1", "p0", "p1", "p2", "p3", "p4"]:
        c.req("DELETE", f"/v2/<name>/manifests/{t}")
    c.req("DELETE", f"/v2/<name>/manifests/{md}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base_url")
    ap.add_argument("--namespace", default=os.environ.get("OCI_NAMESPACE", "myorg/myrepo"))
    ap.add_argument("--crossmount-namespace", default=os.environ.get("OCI_CROSSMOUNT_NAMESPACE"))
    ap.add_argument("--automatic-crossmount", choices=["true", "false"],
                    default=os.environ.get("OCI_AUTOMATIC_CROSSMOUNT"))
    ap.add_argument("--no-extra", action="store_true", help="only the suite's own checks")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    cm = a.crossmount_namespace or f"conformance-{uuid.uuid4()}"
    auto = None if a.automatic_crossmount is None else a.automatic_crossmount == "true"
    c = Ctx(a.base_url, a.namespace, cm, auto, a.verbose)
    d = Data()
    for t in (test01_pull, test02_push, test03_discovery, test04_management):
        try:
            t(c, d)
        except Exception as e:  # a crash in one file must not hide the others
            c.check(t.__name__, "ran to completion", False, repr(e))
    if not a.no_extra:
        try:
            test_extra(c, d)
        except Exception as e:
            c.check("extra", "ran to completion", False, repr(e))
    print(f"{c.passed} passed, {c.failed} failed")
    if c.failures:
        print("failures:", file=sys.stderr)
        for label, det in c.failures:
            print(f"  {label}: {det}", file=sys.stderr)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
