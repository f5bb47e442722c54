#!/usr/bin/env bash
# The container image end to end, offline: scripts/build-image --prebuilt (a static musl
# binary built on this host, the Containerfile's final stage, buildah with the vfs driver)
# publishes it signed with `berth publish` to a throwaway Berth on 127.0.0.1, pulls it back
# from there with podman, checks its configuration (user 65532, port 5000, /data, entrypoint),
# then runs it the way docs/install.md bootstraps it: `serve` open on loopback, `admin user
# add` beside it, and then the registry must ask for credentials. Prints the image's size.
#
# Running uses `podman run` where this machine lets podman start containers, else (a
# container without the rights to set rlimits, as in CI sandboxes) the image's own root
# filesystem under chroot as uid 65532, which still runs the image's binary, users and
# directory permissions. Skips without buildah or podman.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }
command -v buildah >/dev/null && command -v podman >/dev/null || { echo "SKIP image.sh: buildah/podman missing"; exit 0; }
[[ "$(uname -m)" == x86_64 ]] || { echo "SKIP image.sh: exercised on x86_64 hosts"; exit 0; }

# Under the target dir, not /tmp: the image's root filesystem must be executable.
WORK="$(mktemp -d "${CARGO_TARGET_DIR:-$ROOT/target}/deploy-image.XXXXXX")"
WORK="$(cd "$WORK" && pwd)"
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    [[ -n "${CID:-}" ]] && podman "${S[@]}" rm -f "$CID" >/dev/null 2>&1
    [[ -n "${BC:-}" ]] && buildah "${S[@]}" rm "$BC" >/dev/null 2>&1
    if [[ $rc -ne 0 ]]; then for f in "$WORK"/*.log; do [[ -f $f ]] && { echo "--- $f"; tail -n 20 "$f"; }; done; fi
    buildah "${S[@]}" rm --all >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
S=(--storage-driver vfs --root "$WORK/storage" --runroot "$WORK/run")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; return 1; }

step "build the static binary and the image (--prebuilt, vfs)"
bin="$("$ROOT/scripts/build-static" amd64)"
file "$bin" | grep -Eq 'statically linked|static-pie linked' || fail "$bin is not static: $(file "$bin")"

step "a throwaway Berth on 127.0.0.1 and a signing key"
PORT="$(free_port)"; REG="127.0.0.1:$PORT"
"$bin" serve --listen "$REG" --data-dir "$WORK/registry" >"$WORK/registry.log" 2>&1 &
PIDS+=($!)
wait_http "http://$REG/v2/" || fail "the throwaway Berth did not start"
COSIGN_PASSWORD="" "$bin" key generate --output-key "$WORK/cosign.key" --output-pub "$WORK/cosign.pub" >/dev/null

step "scripts/build-image --prebuilt --publish $REG/berth/berth"
COSIGN_PASSWORD="" "$ROOT/scripts/build-image" --prebuilt --storage-driver vfs --root "$WORK/storage" \
    --runroot "$WORK/run" --out "$WORK/out" --manifest localhost/berth:test \
    --publish "$REG/berth/berth" -- --version 0.1.0 --sha 0123456789abcdef --created 2026-01-01T00:00:00Z \
    --sign-key "$WORK/cosign.key" \
    | tee "$WORK/build.out"
grep -q '^image linux/amd64: ' "$WORK/build.out" || fail "no size line from build-image"
"$bin" verify --key "$WORK/cosign.pub" "$REG/berth/berth:0.1.0" >"$WORK/verify.out" || fail "berth verify: $(cat "$WORK/verify.out")"
echo "ok   published image is signed: $(tail -n1 "$WORK/verify.out")"

step "podman pull from the throwaway registry, image configuration"
IMG="$REG/berth/berth:0.1.0"
podman "${S[@]}" pull -q --tls-verify=false "$IMG" >/dev/null
podman "${S[@]}" image inspect "$IMG" --format '{{json .Config}}' >"$WORK/config.json"
python3 - "$WORK/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["User"] == "65532:65532", c["User"]
assert c["Entrypoint"] == ["/usr/local/bin/berth"] and c["Cmd"] == ["serve"], (c["Entrypoint"], c["Cmd"])
assert "5000/tcp" in c["ExposedPorts"] and "/data" in c["Volumes"], c
env = dict(e.split("=", 1) for e in c["Env"])
assert env["BERTH_LISTEN"] == "0.0.0.0:5000" and env["BERTH_DATA_DIR"] == "/data", env
print("ok   user 65532, entrypoint berth serve, port 5000, volume /data")
PY
size="$(podman "${S[@]}" image inspect "$IMG" --format '{{.Size}}')"
echo "ok   image size: $size bytes unpacked ($(( size / 1024 / 1024 )) MiB)"

step "run the pulled image: bootstrap an account, then serve"
PORT2="$(free_port)"
if podman "${S[@]}" run --rm "$IMG" --version >/dev/null 2>"$WORK/podman-probe.log"; then
    how=podman
    # As docs/install.md says: open on the host's loopback only until the account exists.
    CID="$(podman "${S[@]}" run -d -p "127.0.0.1:$PORT2:5000" -e BERTH_INSECURE_OPEN=true "$IMG")"
    wait_http "http://127.0.0.1:$PORT2/v2/" || fail "the image's berth serve did not answer"
    printf 'pw-%s' "$PORT2" | podman "${S[@]}" exec -i "$CID" \
        berth admin user add ci --password-stdin --grant '*:pull,push' >/dev/null
else
    how="chroot (podman cannot start containers here: $(head -c 120 "$WORK/podman-probe.log"))"
    BC="$(buildah "${S[@]}" from "$IMG")"
    RFS="$(buildah "${S[@]}" mount "$BC")"
    # The image's own environment, user and working directory; the host's network, so
    # loopback (where an open registry may listen) instead of a port mapping. It replaces
    # the (sub)shell it runs in: always call it in one (a pipeline, `( ... ) &`), so that
    # the PID of a background call is the server's own and the cleanup stops it.
    run_image() {
        cd / && exec env -i HOME=/home/berth BERTH_DATA_DIR=/data BERTH_LISTEN="127.0.0.1:$PORT2" \
            /usr/sbin/chroot --userspec=65532:65532 "$RFS" /usr/local/bin/berth "$@"
    }
    (run_image serve) >"$WORK/image-serve.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$PORT2/v2/" || fail "the image's berth serve did not answer"
    printf 'pw-%s' "$PORT2" | run_image admin user add ci --password-stdin --grant '*:pull,push' >/dev/null
fi
echo "ok   running with $how"
# The server sees a new account within a second (it re-reads accounts at most once a second).
for _ in $(seq 1 50); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT2/v2/")"
    [[ "$code" == 401 ]] && break
    sleep 0.1
done
[[ "$code" == 401 ]] || fail "anonymous /v2/ answered $code, want 401 (the bootstrap account exists)"
code="$(curl -s -o /dev/null -w '%{http_code}' -u "ci:pw-$PORT2" "http://127.0.0.1:$PORT2/v2/")"
[[ "$code" == 200 ]] || fail "/v2/ with the bootstrap account answered $code"
echo "ok   the image serves a registry that needs the bootstrap account's credentials"
echo "PASS image.sh"
