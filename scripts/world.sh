#!/usr/bin/env bash
# Builds the small world of e2e/world_test.go (clients on six continents, six bucket mirrors in
# versitygw and fake-gcs-server, three of them `sync: demand`, a registry, the proxy), pulls by
# its fixed schedule before any sync, after `oci-proxy sync` and after `oci-proxy sync --demand`,
# and prints where the blob bytes came from (the figures docs/BENCHMARKS.md records). About 40 s.
#   scripts/world.sh                the whole story; fails unless the goal is met at the end
#   scripts/world.sh --no-demand    the same without the demand round: the goal is missed, and
#                                   the script fails
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
"") ;;
--no-demand) export OCI_PROXY_WORLD_SKIP_DEMAND=1 ;;
*) echo "usage: scripts/world.sh [--no-demand]" >&2; exit 2 ;;
esac
[[ -n ${SKIP_DEPS:-} ]] || scripts/deps.sh
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
CI=true go test -count=1 -timeout 5m -v -run '^TestWorld$' ./e2e >"$out" 2>&1 || status=$?
# The test's own log lines without their file:line prefix (continuations indented by two), and
# its result; what the servers printed stays in the test's full output.
awk '
	/^    world_test\.go:[0-9]+: / { sub(/^    world_test\.go:[0-9]+: /, ""); print; cont = 1; next }
	cont && /^        / { sub(/^        /, ""); print; next }
	{ cont = 0 }
	/^--- (PASS|FAIL): TestWorld/ { print }
' "$out"
exit $status
