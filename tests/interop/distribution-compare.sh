#!/usr/bin/env bash
# CNCF Distribution (/usr/bin/docker-registry) next to Berth: the same conformance reproduction
# (tests/conformance/run.py) against both, and a side-by-side of the requests where Berth
# differs from what clients and the suite expect; then `berth copy` of a signed image through
# Distribution and back (referrers via the tag schema, cosign v2 tags). Fails if Distribution
# cannot be started, if Berth differs from Distribution on the side-by-side list, or if a
# signature is lost on the way.
source "$(dirname "$0")/lib.sh"
command -v docker-registry >/dev/null || fail "docker-registry missing (apt-get install -y docker-registry)"
start_berth
DPORT="$(free_port)"; DREG="127.0.0.1:$DPORT"
cat >"$WORK/dist.yml" <<YML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $WORK/dist}
  delete: {enabled: true}
http: {addr: $DREG}
YML
docker-registry serve "$WORK/dist.yml" >"$WORK/dist.log" 2>&1 &
EXTRA_PIDS="$!"
wait_http "http://$DREG/v2/" || fail "distribution did not start"
step "distribution on $DREG ($(docker-registry --version 2>/dev/null | head -1))"

step "conformance reproduction against Distribution (informational)"
python3 "$ROOT/tests/conformance/run.py" "http://$DREG" --no-extra 2>/dev/null | grep -E '^(FAIL|[0-9]+ passed)' | sed 's/^/  distribution: /' || true

step "side by side"
mismatch=0
cmpreq() { # label expected-berth-status-or-"same" method path [curl args...]
    local label="$1" want="$2" method="$3" path="$4"; shift 4
    local b d
    b=$(curl -s -o /dev/null -w '%{http_code}' -X "$method" "$@" "http://$REG$path" || true)
    d=$(curl -s -o /dev/null -w '%{http_code}' -X "$method" "$@" "http://$DREG$path" || true)
    local mark="same"
    if [[ "$want" != same ]]; then
        # A deliberate difference: Berth must give exactly this status.
        if [[ "$b" == "$want" ]]; then mark="intended (OCI v1.1)"; else mark="DIFFERS (want $want)"; mismatch=$((mismatch+1)); fi
    elif [[ "$b" != "$d" ]]; then mark="DIFFERS"; mismatch=$((mismatch+1)); fi
    printf '  %-60s berth %s  distribution %s  %s\n' "$label" "$b" "$d" "$mark"
}
# a blob both registries hold, for the range checks
blob="$WORK/blob"; head -c 2048 /dev/urandom >"$blob"; dig="sha256:$(sha256sum "$blob" | cut -d' ' -f1)"
for r in "$REG" "$DREG"; do
    # POST + PUT (Distribution 2.8 ignores ?digest= on a POST and just opens a session)
    loc=$(curl -fsS -o /dev/null -D - -X POST "http://$r/v2/cmp/repo/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
    [[ "$loc" == http* ]] || loc="http://$r$loc"
    sep='?'; [[ "$loc" == *\?* ]] && sep='&'
    curl -fsS -o /dev/null -X PUT --data-binary @"$blob" -H 'Content-Type: application/octet-stream' \
        "$loc${sep}digest=$dig" || fail "blob push to $r"
done
cmpreq "GET manifest .INVALID_MANIFEST_NAME (suite expects 404)" same GET /v2/cmp/repo/manifests/.INVALID_MANIFEST_NAME
cmpreq "HEAD manifest .INVALID_MANIFEST_NAME (suite expects 404)" same HEAD /v2/cmp/repo/manifests/.INVALID_MANIFEST_NAME -I
cmpreq "GET manifest of unknown tag" same GET /v2/cmp/repo/manifests/nope
cmpreq "GET blob Range bytes=500-0 (new suite expects 416)" same GET "/v2/cmp/repo/blobs/$dig" -H 'Range: bytes=500-0'
cmpreq "GET blob Range bytes=5000-10000" same GET "/v2/cmp/repo/blobs/$dig" -H 'Range: bytes=5000-10000'
cmpreq "GET blob Range bytes=0-9" same GET "/v2/cmp/repo/blobs/$dig" -H 'Range: bytes=0-9'
cmpreq "GET tags/list of unknown repo" same GET /v2/nope/nope/tags/list
# Berth mounts without `from` when the blob is in a repository the caller may read
# (automatic content discovery of OCI v1.1); Distribution 2.8 always opens a session.
cmpreq "POST mount without from" 201 POST "/v2/cmp/other/blobs/uploads/?mount=$dig"
echo "$mismatch difference(s)"
[[ $mismatch -eq 0 ]] || fail "Berth differs from Distribution on $mismatch request(s) above"

# Copies carry their trust: an image with a referrer (subject field) and a cosign v2
# signature (sha256-<hex>.sig tag) goes Berth -> Distribution (no referrers API: the tag
# schema) -> Berth with `berth copy`, every digest intact.
step "berth copy carries signatures through Distribution"
python3 - "$REG" push >"$WORK/signed.json" <<'PY' || fail "pushing the signed image to Berth"
import hashlib, json, sys, urllib.request
reg = sys.argv[1]
def req(method, path, body=b"", ctype=None):
    r = urllib.request.Request(f"http://{reg}{path}", data=body or None, method=method)
    if ctype: r.add_header("Content-Type", ctype)
    return urllib.request.urlopen(r)
def blob(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    req("POST", f"/v2/sig/app/blobs/uploads/?digest={d}", data, "application/octet-stream")
    return {"mediaType": "application/octet-stream", "digest": d, "size": len(data)}
def manifest(m, ref):
    data = json.dumps(m, indent=1).encode()
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    req("PUT", f"/v2/sig/app/manifests/{ref or d}", data, m["mediaType"])
    return {"mediaType": m["mediaType"], "digest": d, "size": len(data)}
OCI = "application/vnd.oci.image.manifest.v1+json"
cfg = dict(blob(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'),
           mediaType="application/vnd.oci.image.config.v1+json")
image = manifest({"schemaVersion": 2, "mediaType": OCI, "config": cfg, "layers": [blob(b"layer")]}, "v1")
empty = dict(blob(b"{}"), mediaType="application/vnd.oci.empty.v1+json")
sbom = manifest({"schemaVersion": 2, "mediaType": OCI, "artifactType": "application/spdx+json",
                 "config": empty, "layers": [blob(b"sbom")], "subject": image}, None)
legacy = manifest({"schemaVersion": 2, "mediaType": OCI, "config": cfg, "layers": [blob(b"simple signing")],
                   "annotations": {"dev.cosignproject.cosign/signature": "MEUC"}},
                  "sha256-" + image["digest"][7:] + ".sig")
print(json.dumps({"image": image["digest"], "sbom": sbom["digest"], "legacy": legacy["digest"]}))
PY
"$BERTH_BIN" copy -q "$REG/sig/app:v1" "$DREG/mirror/app:v1" >/dev/null || fail "berth copy to Distribution"
"$BERTH_BIN" copy -q "$DREG/mirror/app:v1" "$REG/back/app:v1" >/dev/null || fail "berth copy back from Distribution"
"$BERTH_BIN" tags -q --all "$DREG/mirror/app" >"$WORK/dist-tags" || fail "berth tags --all on Distribution"
"$BERTH_BIN" tags -q "$REG/back/app" >"$WORK/berth-tags" || fail "berth tags on Berth"
python3 - "$REG" "$DREG" "$WORK/signed.json" "$WORK/dist-tags" "$WORK/berth-tags" <<'PY' || fail "signatures were not carried"
import json, sys, urllib.request
reg, dreg, signed, dist_tags, berth_tags = sys.argv[1:]
s = json.load(open(signed))
hexd = s["image"][7:]
def get(host, path, accept="application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"):
    r = urllib.request.Request(f"http://{host}{path}", headers={"Accept": accept})
    with urllib.request.urlopen(r) as resp:
        return resp.headers.get("Docker-Content-Digest"), json.load(resp)
def check(cond, what):
    print(("  ok   " if cond else "  FAIL ") + what)
    if not cond: sys.exit(1)
_, index = get(dreg, f"/v2/mirror/app/manifests/sha256-{hexd}")
check([m["digest"] for m in index["manifests"]] == [s["sbom"]], "Distribution: the tag schema's index lists the SBOM")
d, _ = get(dreg, f"/v2/mirror/app/manifests/sha256-{hexd}.sig")
check(d == s["legacy"], "Distribution: the cosign v2 signature is under its tag, same digest")
tags = open(dist_tags).read().split()
check(f"sha256-{hexd}.sig" in tags and "v1" in tags, f"berth tags --all on Distribution: {tags}")
_, refs = get(reg, f"/v2/back/app/referrers/{s['image']}")
got = sorted(m["digest"] for m in refs["manifests"])
check(got == sorted([s["sbom"], s["legacy"]]), "Berth after the round trip: referrers API lists the SBOM and the signature")
check(open(berth_tags).read().split() == ["v1"], "Berth: signature tags hidden from berth tags")
PY
echo "PASS distribution-compare.sh"
