#!/usr/bin/env python3
"""/metrics read by Prometheus' own text-format parser (prometheus_client), after real
traffic: every family parses, counters move, labels stay bounded (no digests)."""
import hashlib
import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _berth import Berth  # noqa: E402

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def check(cond, msg):
    if not cond:
        raise SystemExit(f"FAIL: {msg}")
    print(f"ok  {msg}")


def req(method, url, body=None, headers=None):
    r = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    with Berth() as b:
        base = f"http://{b.host}"
        config = b'{"architecture":"amd64","os":"linux"}'
        cd = "sha256:" + hashlib.sha256(config).hexdigest()
        check(req("POST", f"{base}/v2/m/app/blobs/uploads/?digest={cd}", config)[0] == 201, "blob pushed")
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": cd, "size": len(config)}, "layers": []}).encode()
        ct = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        check(req("PUT", f"{base}/v2/m/app/manifests/v1", manifest, ct)[0] == 201, "manifest pushed")
        for _ in range(4):
            req("GET", f"{base}/v2/m/app/manifests/v1")
        check(req("GET", f"{base}/v2/m/app/manifests/missing")[0] == 404, "a miss")
        status, body = req("GET", f"{base}/metrics")
        check(status == 200, "GET /metrics")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        for name in ["berth_http_requests", "berth_http_request_duration_seconds", "berth_errors",
                     "berth_pulls", "berth_storage_bytes", "berth_blobs_committed"]:
            check(name in families, f"family {name} parsed")
        pulls = {s.labels["repository"]: s.value for s in families["berth_pulls"].samples if s.name == "berth_pulls_total"}
        check(pulls.get("m/app") == 4.0, f"4 pulls of m/app: {pulls}")
        errs = {s.labels["code"]: s.value for s in families["berth_errors"].samples if s.name == "berth_errors_total"}
        check(errs.get("MANIFEST_UNKNOWN") == 1.0, f"MANIFEST_UNKNOWN counted: {errs}")
        hist = [s for s in families["berth_http_request_duration_seconds"].samples
                if s.name.endswith("_count") and s.labels.get("route") == "manifest"]
        check(hist and hist[0].value >= 6, "latency histogram counts manifest requests")
        labels = [v for f in families.values() for s in f.samples for v in s.labels.values()]
        check(not any("sha256:" in v for v in labels), "no digest in any label")
        check(families["berth_storage_bytes"].samples[0].value == len(config), "storage bytes")
    print("PASS metrics.py")


if __name__ == "__main__":
    main()
