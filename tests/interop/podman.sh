#!/usr/bin/env bash
# buildah + podman against Berth: build FROM scratch with a COPY, push, pull back, compare
# digests and file content; a two-arch manifest list pushed with `podman manifest push --all`.
# Pushes go to REG, pulls to PULL (the same Berth, or the other replica of a pair: see lib.sh).
source "$(dirname "$0")/lib.sh"
command -v podman >/dev/null && command -v buildah >/dev/null || fail "podman/buildah missing (apt-get install -y podman buildah)"
start_berth

S=(--storage-driver vfs --root "$WORK/storage" --runroot "$WORK/run")
# pulls go to a second, empty store so nothing is served from the build cache
P=(--storage-driver vfs --root "$WORK/pstorage" --runroot "$WORK/prun")
export REGISTRIES_CONFIG_PATH="$WORK/registries.conf"
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$REG" >"$REGISTRIES_CONFIG_PATH"
[[ "$PULL" == "$REG" ]] || printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$PULL" >>"$REGISTRIES_CONFIG_PATH"
CTX="$WORK/ctx"; mkdir -p "$CTX"
echo "hello from berth interop $RANDOM" >"$CTX/hello.txt"
printf 'FROM scratch\nCOPY hello.txt /hello.txt\nCMD ["/hello.txt"]\n' >"$CTX/Containerfile"

step "buildah build (amd64 and arm64, FROM scratch)"
buildah "${S[@]}" build -q --isolation chroot --arch amd64 -f "$CTX/Containerfile" -t localhost/tiny:amd64 "$CTX" >/dev/null
buildah "${S[@]}" build -q --isolation chroot --arch arm64 -f "$CTX/Containerfile" -t localhost/tiny:arm64 "$CTX" >/dev/null

step "buildah push (docker v2s2 and OCI)"
buildah "${S[@]}" push -q --tls-verify=false --digestfile "$WORK/d1" localhost/tiny:amd64 "docker://$REG/interop/tiny:1"
buildah "${S[@]}" push -q --tls-verify=false --format oci --digestfile "$WORK/d2" localhost/tiny:amd64 "docker://$REG/interop/tiny:oci"
D1=$(cat "$WORK/d1"); D2=$(cat "$WORK/d2")
[[ -n "$D1" && -n "$D2" ]] || fail "no digest from buildah push"

step "registry serves the pushed manifests under the pushed digests"
for pair in "1 $D1" "oci $D2"; do
    set -- $pair
    got=$(curl -fsS -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
        "http://$PULL/v2/interop/tiny/manifests/$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
    [[ "$got" == "$2" ]] || fail "tag $1: registry says $got, buildah pushed $2"
done

step "podman pull back, digest and file content"
podman "${P[@]}" pull -q --tls-verify=false "$PULL/interop/tiny:1" >/dev/null
got=$(podman "${P[@]}" image inspect --format '{{.Digest}}' "$PULL/interop/tiny:1")
[[ "$got" == "$D1" ]] || fail "podman pulled digest $got, pushed $D1"
cid=$(podman "${P[@]}" create "$PULL/interop/tiny:1")
podman "${P[@]}" cp "$cid:/hello.txt" "$WORK/out.txt"
cmp -s "$WORK/out.txt" "$CTX/hello.txt" || fail "pulled /hello.txt differs"
podman "${P[@]}" rm "$cid" >/dev/null

step "podman push of the OCI image to another repo, and podman search/tags"
podman "${P[@]}" push -q --tls-verify=false "$PULL/interop/tiny:1" "docker://$REG/interop/again:1"
tags=$(skopeo list-tags --tls-verify=false "docker://$PULL/interop/tiny" | python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin)["Tags"])))')
[[ "$tags" == "1 oci" ]] || fail "tags are '$tags'"

step "podman manifest create/add/push --all (two architectures)"
podman "${S[@]}" manifest create localhost/tiny-list >/dev/null
podman "${S[@]}" manifest add localhost/tiny-list containers-storage:localhost/tiny:amd64 >/dev/null
podman "${S[@]}" manifest add localhost/tiny-list containers-storage:localhost/tiny:arm64 >/dev/null
podman "${S[@]}" manifest push -q --all --tls-verify=false --digestfile "$WORK/dl" localhost/tiny-list "docker://$REG/interop/multi:1"
DL=$(cat "$WORK/dl")
raw=$(skopeo inspect --raw --tls-verify=false "docker://$PULL/interop/multi:1")
echo "$raw" | python3 -c '
import json,sys
m=json.load(sys.stdin)
arch=sorted(d["platform"]["architecture"] for d in m["manifests"])
assert arch==["amd64","arm64"], arch
' || fail "manifest list is not amd64+arm64: $raw"
got=$(printf '%s' "$raw" | sha256sum | cut -d' ' -f1)
[[ "sha256:$got" == "$DL" ]] || fail "list digest sha256:$got, pushed $DL"
podman "${P[@]}" pull -q --tls-verify=false --arch arm64 "$PULL/interop/multi:1" >/dev/null
arch=$(podman "${P[@]}" image inspect --format '{{.Architecture}}' "$PULL/interop/multi:1")
[[ "$arch" == "arm64" ]] || fail "pulled architecture $arch, wanted arm64"

step "podman manifest inspect from the registry"
podman "${S[@]}" manifest inspect "$PULL/interop/multi:1" >/dev/null || fail "manifest inspect"
echo "PASS podman.sh"
