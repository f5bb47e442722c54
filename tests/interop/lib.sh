# Sourced by the interop scripts: start a private Berth on a free loopback port.
#   start_berth        -> sets BERTH_PORT, REG (127.0.0.1:PORT), WORK (temp dir), BERTH_PID
#   fail "message"     -> prints and exits 1
# Cleanup (kill that Berth, remove WORK) runs on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BERTH_BIN="${BERTH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/berth}"

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

cleanup() {
    local rc=$?
    if [[ -n "${BERTH_PID:-}" ]]; then kill "$BERTH_PID" 2>/dev/null || true; wait "$BERTH_PID" 2>/dev/null || true; fi
    if [[ -n "${EXTRA_PIDS:-}" ]]; then for p in $EXTRA_PIDS; do kill "$p" 2>/dev/null || true; done; fi
    if [[ $rc -ne 0 && -n "${WORK:-}" && -f "$WORK/berth.log" ]]; then
        echo "--- last lines of the Berth log:" >&2; tail -n 20 "$WORK/berth.log" >&2
    fi
    [[ -n "${WORK:-}" ]] && rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT

wait_http() { # url
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

start_berth() {
    [[ -x "$BERTH_BIN" ]] || (cd "$ROOT" && cargo build -q -p berth) || fail "cannot build berth"
    WORK="$(mktemp -d /tmp/berth-interop.XXXXXX)"
    BERTH_PORT="$(free_port)"
    REG="127.0.0.1:$BERTH_PORT"
    "$BERTH_BIN" serve --listen "$REG" --data-dir "$WORK/data" >"$WORK/berth.log" 2>&1 &
    BERTH_PID=$!
    wait_http "http://$REG/v2/" || fail "berth did not start on $REG"
    step "berth listening on $REG (data $WORK/data)"
}
