#!/usr/bin/env bash
# skopeo against Berth: copy --all of a two-platform OCI layout in, list-tags, copy back out with
# identical digests, copy between repositories (mount), sync, delete. Writes go to REG, reads to
# PULL (the same Berth, or the other replica of a pair: see lib.sh).
source "$(dirname "$0")/lib.sh"
command -v skopeo >/dev/null || fail "skopeo missing"
start_berth

step "make a two-platform OCI layout (no network)"
python3 - "$WORK/src" <<'PY'
import hashlib, io, json, os, sys, tarfile, gzip
root = sys.argv[1]
os.makedirs(f"{root}/blobs/sha256", exist_ok=True)
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(f"{root}/blobs/sha256/{d}", "wb").write(b)
    return {"digest": "sha256:" + d, "size": len(b)}
descs = []
for arch in ("amd64", "arm64"):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        data = f"hello {arch}\n".encode()
        ti = tarfile.TarInfo("hello.txt"); ti.size = len(data); ti.mtime = 0
        t.addfile(ti, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    diff = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    cfg = json.dumps({"architecture": arch, "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [diff]}, "config": {}}).encode()
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(cfg)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(layer)}]}).encode()
    descs.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(m),
                  "platform": {"architecture": arch, "os": "linux"}})
idx = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                  "manifests": descs}).encode()
d = put(idx)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", **d,
           "annotations": {"org.opencontainers.image.ref.name": "1.0"}}]}, open(f"{root}/index.json", "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{root}/oci-layout", "w"))
print(d["digest"], file=open(f"{root}/../index.digest", "w"))
PY
IDX=$(cat "$WORK/index.digest")

step "skopeo copy --all oci: -> berth"
skopeo copy -q --all --dest-tls-verify=false "oci:$WORK/src:1.0" "docker://$REG/team/app:1.0"
got=$(skopeo inspect --raw --tls-verify=false "docker://$PULL/team/app:1.0" | sha256sum | cut -d' ' -f1)
[[ "sha256:$got" == "$IDX" ]] || fail "index digest changed: sha256:$got vs $IDX"

step "skopeo inspect picks the platform"
arch=$(skopeo inspect --tls-verify=false --override-arch arm64 "docker://$PULL/team/app:1.0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Architecture"])')
[[ "$arch" == "arm64" ]] || fail "inspect arch $arch"

step "skopeo list-tags"
skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false "docker://$PULL/team/app:1.0" "docker://$REG/team/app:latest"
tags=$(skopeo list-tags --tls-verify=false "docker://$PULL/team/app" | python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin)["Tags"])))')
[[ "$tags" == "1.0 latest" ]] || fail "tags '$tags'"

step "skopeo copy --all berth -> oci: with identical digests"
skopeo copy -q --all --src-tls-verify=false "docker://$PULL/team/app:1.0" "oci:$WORK/back:1.0"
back=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$WORK/back/index.json")
[[ "$back" == "$IDX" ]] || fail "pulled index $back vs $IDX"
diff <(cd "$WORK/src/blobs/sha256" && ls | sort) <(cd "$WORK/back/blobs/sha256" && ls | sort) >/dev/null || fail "blob sets differ"

step "skopeo copy to another repository (cross-repo mount) and nested name"
skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false "docker://$REG/team/app:1.0" "docker://$REG/other/deep/name/app:1.0"
got=$(skopeo inspect --raw --tls-verify=false "docker://$PULL/other/deep/name/app:1.0" | sha256sum | cut -d' ' -f1)
[[ "sha256:$got" == "$IDX" ]] || fail "copy changed digest"
grep -q 'POST path=/v2/other/deep/name/app/blobs/uploads/ status=201' "$BLOG" || fail "no mount (201 POST) seen in the log"

step "skopeo sync docker -> dir"
skopeo sync --all --src-tls-verify=false --src docker --dest dir "$PULL/team/app" "$WORK/sync" >/dev/null 2>&1
[[ -d "$WORK/sync/app:1.0" || -n "$(ls "$WORK/sync")" ]] || fail "sync produced nothing"

step "skopeo delete (by tag: deletes the manifest)"
skopeo delete --tls-verify=false "docker://$REG/team/app:latest"
# (Another replica learns of the delete from the database's change notification: a moment.)
for _ in $(seq 1 20); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$PULL/v2/team/app/manifests/1.0")
    [[ "$code" == "404" ]] && break
    sleep 0.1
done
[[ "$code" == "404" ]] || fail "after skopeo delete, the other tag still answers $code (Distribution: 404)"
echo "PASS skopeo.sh"
