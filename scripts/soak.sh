#!/usr/bin/env bash
# The load and fault suite at full length: 256 connections for 60 s per scenario, on loopback
# only, against the real binary, registry and mirrors (see e2e/soak_test.go). Prints the SOAK
# figure lines that docs/RELIABILITY.md records. It takes about 8 minutes.
#   scripts/soak.sh                 every scenario
#   scripts/soak.sh Churn           the scenarios whose test name matches
set -euo pipefail
cd "$(dirname "$0")/.."
filter=${1:-}
[[ -n ${SKIP_DEPS:-} ]] || scripts/deps.sh
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# Without the race detector: the figures are the service's, not the detector's.
OCI_PROXY_SOAK=full CI=true go test -count=1 -timeout 30m -v -run "TestSoak${filter}" ./e2e | tee "$out" | grep -E '^(--- |ok|FAIL)' || true
echo
grep -h 'SOAK ' "$out" | sed 's/^ *soak_test.go:[0-9]*: //'
grep -q '^ok' "$out"
