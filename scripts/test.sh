#!/usr/bin/env bash
# Runs every test of oci-proxy: formatting and vet, unit and end-to-end tests with the race
# detector, each fuzz target for a bounded time, and every benchmark once (so they keep working).
# Installs the real components the end-to-end tests need first (scripts/deps.sh; root for apt).
#   scripts/test.sh                 everything
#   FUZZTIME=5s scripts/test.sh     shorter fuzzing
#   SKIP_DEPS=1 scripts/test.sh     do not install anything
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-15s}
step() { printf '\n=== %s\n' "$*"; }

if [[ -z ${SKIP_DEPS:-} ]]; then
	step "components"
	scripts/deps.sh
fi

step "gofmt, go vet and staticcheck"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [[ -n $unformatted ]]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
staticcheck=$(go env GOBIN)
[[ -n $staticcheck ]] || staticcheck="$(go env GOPATH)/bin"
if [[ -x $staticcheck/staticcheck ]]; then
	"$staticcheck/staticcheck" ./...
elif [[ -n ${CI:-} ]]; then
	echo "staticcheck is missing (scripts/deps.sh installs it)"; exit 1
else
	echo "staticcheck is missing; skipped (scripts/deps.sh installs it)"
fi

step "tests (race detector, end-to-end included)"
go test -race -count=1 -timeout 20m ./...

step "fuzz targets, $fuzztime each"
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
	dir=$(dirname "$file")
	for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
		echo "--- $dir $target"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$dir" >/tmp/fuzz.$$ 2>&1 || { cat /tmp/fuzz.$$; exit 1; }
		tail -1 /tmp/fuzz.$$
	done
done
rm -f /tmp/fuzz.$$

step "benchmarks, once each"
go test -run '^$' -bench . -benchtime 1x ./... >/tmp/bench.$$ 2>&1 || { cat /tmp/bench.$$; exit 1; }
grep -E '^(ok|FAIL)' /tmp/bench.$$ || true
rm -f /tmp/bench.$$

step "all tests passed"
