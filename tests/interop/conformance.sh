#!/usr/bin/env bash
# The OCI conformance reproduction (tests/conformance/run.py) against a private Berth.
source "$(dirname "$0")/lib.sh"
start_berth
python3 "$ROOT/tests/conformance/run.py" "http://$REG" "$@"
