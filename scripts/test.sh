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
# fuzz DIR TARGET: fuzz one target for $fuzztime. Go's fuzzing coordinator can report a bare
# "context deadline exceeded" when -fuzztime runs out while a worker is mid-input (golang/go#75804,
# seen on busy machines); that run found nothing, wrote no failing input, and is run again, up to
# twice. Any other failure, and every failing input, fails the step.
fuzz() {
	local dir=$1 target=$2 try
	for try in 1 2 3; do
		if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$dir" >/tmp/fuzz.$$ 2>&1; then
			tail -1 /tmp/fuzz.$$
			return 0
		fi
		if ! grep -q '^    context deadline exceeded$' /tmp/fuzz.$$ || grep -q 'Failing input written to' /tmp/fuzz.$$; then
			break
		fi
		echo "$target: the fuzzing deadline fired under a worker (no failing input); again"
	done
	cat /tmp/fuzz.$$
	return 1
}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
	dir=$(dirname "$file")
	for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
		echo "--- $dir $target"
		fuzz "$dir" "$target" || exit 1
	done
done
rm -f /tmp/fuzz.$$

step "benchmarks, once each"
go test -run '^$' -bench . -benchtime 1x ./... >/tmp/bench.$$ 2>&1 || { cat /tmp/bench.$$; exit 1; }
grep -E '^(ok|FAIL)' /tmp/bench.$$ || true
rm -f /tmp/bench.$$

step "all tests passed"
