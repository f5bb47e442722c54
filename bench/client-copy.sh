#!/usr/bin/env bash
# Benchmarks `berth copy` against `skopeo copy` between two local CNCF Distribution
# registries (the "Client copy: berth vs skopeo" section of docs/benchmarks.md).
#
#   bench/client-copy.sh [--total-mib 200] [--layers 5] [--rounds 3]
#   BERTH=target/release/berth bench/client-copy.sh     # use an existing binary
#
# Builds berth in release mode, writes a two-platform image with bench/mkimage.py, pushes
# it to registry A, then times, per round and per tool, with fresh data directories:
#   cold   A -> B, every blob moves (whole index, every platform);
#   warm   the same copy again: every blob is already at B;
#   mount  A -> another repository of A: blobs can be mounted.
# Prints a Markdown table of median seconds and the skopeo/berth ratio.
# Needs docker-registry, skopeo and python3; traffic stays on 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOTAL_MIB=200
LAYERS=5
ROUNDS=3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --total-mib) TOTAL_MIB="$2"; shift ;;
    --layers) LAYERS="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    -h|--help) sed -n "2,15p" "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

for tool in docker-registry skopeo python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done

# BERTH=/path/to/berth skips the build.
if [[ -z "${BERTH:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q -p berth)
  BERTH="$ROOT/target/release/berth"
fi
WORK="$(mktemp -d /tmp/berth-client-bench.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts a Distribution registry on a free loopback port; sets ADDR to its address.
start_registry() {
  local name="$1" dir="$WORK/$1"
  mkdir -p "$dir"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:0}
EOF
  : >"$dir/log"
  docker-registry serve "$dir/config.yml" >/dev/null 2>"$dir/log" &
  PIDS+=($!)
  local deadline=$((SECONDS + 20))
  while ! grep -q "listening on" "$dir/log"; do
    ((SECONDS < deadline)) || { echo "bench: registry $name did not start" >&2; exit 1; }
    sleep 0.1
  done
  ADDR=$(grep -o 'listening on [0-9.:]*' "$dir/log" | head -1 | awk '{print $3}')
}

stop_registries() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
}

# Prints the wall-clock seconds a command takes.
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>"$WORK/last.err" || { cat "$WORK/last.err" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

python3 "$ROOT/bench/mkimage.py" --total-mib "$TOTAL_MIB" --layers "$LAYERS" "$WORK/image" 42 >/dev/null
SK=(skopeo --insecure-policy copy --all --src-tls-verify=false --dest-tls-verify=false -q)

declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  for tool in berth skopeo; do
    start_registry "a-$tool-$round"; A=$ADDR
    start_registry "b-$tool-$round"; B=$ADDR
    "$BERTH" push -q "oci:$WORK/image:latest" "$A/bench:latest" >/dev/null
    if [[ $tool == berth ]]; then
      cold=$(timed "$BERTH" copy -q "$A/bench:latest" "$B/bench:latest")
      warm=$(timed "$BERTH" copy -q "$A/bench:latest" "$B/bench:latest")
      mount=$(timed "$BERTH" copy -q "$A/bench:latest" "$A/other:latest")
    else
      cold=$(timed "${SK[@]}" "docker://$A/bench:latest" "docker://$B/bench:latest")
      warm=$(timed "${SK[@]}" "docker://$A/bench:latest" "docker://$B/bench:latest")
      mount=$(timed "${SK[@]}" "docker://$A/bench:latest" "docker://$A/other:latest")
    fi
    # The copies must agree on the digest.
    d=$("$BERTH" digest "$B/bench:latest")
    [[ $d == $("$BERTH" digest "$A/bench:latest") ]] || { echo "bench: digest changed" >&2; exit 1; }
    RESULTS[$tool,cold]+="$cold "
    RESULTS[$tool,warm]+="$warm "
    RESULTS[$tool,mount]+="$mount "
    stop_registries
  done
done

echo "Image: 2 platforms x $LAYERS layers, $TOTAL_MIB MiB in total; $ROUNDS rounds; median seconds."
echo
echo "| Copy | berth (s) | skopeo (s) | skopeo / berth |"
echo "| --- | ---: | ---: | ---: |"
for kind in cold warm mount; do
  b=$(tr ' ' '\n' <<<"${RESULTS[berth,$kind]}" | grep . | median)
  s=$(tr ' ' '\n' <<<"${RESULTS[skopeo,$kind]}" | grep . | median)
  ratio=$(echo "scale=2; $s / $b" | bc)
  printf '| %s | %.2f | %.2f | %.2fx |\n' "$kind" "$b" "$s" "$ratio"
done
