#!/usr/bin/env bash
# Checks deploy/systemd/berth.service: `systemd-analyze verify` accepts it (with ExecStart
# pointed at a real berth binary), it keeps the hardening options docs/install.md promises,
# and `systemd-analyze security` rates its exposure "OK" (below 2.0). Skips without
# systemd-analyze.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
UNIT="$ROOT/deploy/systemd/berth.service"
BERTH_BIN="${BERTH_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/berth}"
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "SKIP systemd.sh: no systemd-analyze"; exit 0; }
[[ -x "$BERTH_BIN" ]] || (cd "$ROOT" && cargo build -q -p berth) || fail "cannot build berth"
# systemd wants an absolute ExecStart path.
BERTH_BIN="$(realpath "$BERTH_BIN")"

for opt in 'User=berth' 'StateDirectory=berth' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
           'ProtectHome=yes' 'PrivateTmp=yes' 'CapabilityBoundingSet=' \
           'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'SystemCallFilter=@system-service' \
           'LimitNOFILE=65536'; do
    grep -qxF "$opt" "$UNIT" || fail "berth.service lacks $opt"
    echo "ok   $opt"
done

WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
sed "s#^ExecStart=/usr/local/bin/berth #ExecStart=$BERTH_BIN #" "$UNIT" >"$WORK/berth.service"
systemd-analyze verify "$WORK/berth.service" || fail "systemd-analyze verify"
echo "ok   systemd-analyze verify"
score="$(systemd-analyze security --offline=yes "$WORK/berth.service" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for berth.service: \([0-9.]*\).*/\1/p')"
[[ -n "$score" ]] || fail "no exposure level from systemd-analyze security"
awk -v s="$score" 'BEGIN{exit !(s < 2.0)}' || fail "exposure level $score, want below 2.0"
echo "ok   systemd-analyze security: exposure $score"
echo "PASS systemd.sh"
