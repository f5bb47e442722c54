# Sourced by the interop scripts: start a private Berth on a free loopback port.
#   start_berth        -> sets BERTH_PORT, REG (127.0.0.1:PORT), WORK (temp dir), BERTH_PID,
#                         PULL (the address to read back through: REG) and BLOG (its log)
#   fail "message"     -> prints and exits 1
# Cleanup (kill that Berth, run `extra_cleanup` if the script defines it, remove WORK) runs on exit.
#
# Against a replica pair (replicas.sh): with INTEROP_PUSH=HOST:PORT and INTEROP_PULL=HOST:PORT
# (and INTEROP_PUSH_LOG, replica A's log) in the environment, start_berth starts nothing: the
# script pushes through REG=INTEROP_PUSH and reads back through PULL=INTEROP_PULL.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BERTH_BIN="${BERTH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/berth}"

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# N distinct free ports (all held open until every one is chosen, so none repeats).
free_ports() { python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }

cleanup() {
    local rc=$?
    if [[ -n "${BERTH_PID:-}" ]]; then kill "$BERTH_PID" 2>/dev/null || true; wait "$BERTH_PID" 2>/dev/null || true; fi
    if [[ -n "${EXTRA_PIDS:-}" ]]; then for p in $EXTRA_PIDS; do kill "$p" 2>/dev/null || true; done; fi
    if declare -F extra_cleanup >/dev/null; then extra_cleanup || true; fi
    if [[ $rc -ne 0 && -n "${BLOG:-}" && -f "$BLOG" ]]; then
        echo "--- last lines of the Berth log ($BLOG):" >&2; tail -n 20 "$BLOG" >&2
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
    if [[ -n "${INTEROP_PUSH:-}" ]]; then
        WORK="$(mktemp -d /tmp/berth-interop.XXXXXX)"
        REG="$INTEROP_PUSH"; PULL="${INTEROP_PULL:-$INTEROP_PUSH}"; BLOG="${INTEROP_PUSH_LOG:-}"
        step "pushing through $REG, reading back through $PULL"
        return
    fi
    [[ -x "$BERTH_BIN" ]] || (cd "$ROOT" && cargo build -q -p berth) || fail "cannot build berth"
    WORK="$(mktemp -d /tmp/berth-interop.XXXXXX)"
    BERTH_PORT="$(free_port)"
    REG="127.0.0.1:$BERTH_PORT"
    "$BERTH_BIN" serve --listen "$REG" --data-dir "$WORK/data" >"$WORK/berth.log" 2>&1 &
    BERTH_PID=$!
    PULL="$REG"; BLOG="$WORK/berth.log"
    wait_http "http://$REG/v2/" || fail "berth did not start on $REG"
    step "berth listening on $REG (data $WORK/data)"
}
