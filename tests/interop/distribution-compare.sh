#!/usr/bin/env bash
# CNCF Distribution (/usr/bin/docker-registry) next to Berth: the same conformance reproduction
# (tests/conformance/run.py) against both, and a side-by-side of the requests where Berth
# differs from what clients and the suite expect. Fails only if Distribution cannot be started
# or if Berth differs from Distribution on the side-by-side list.
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
echo "PASS distribution-compare.sh"
