#!/usr/bin/env bash
# Builds the static oci-proxy binary and turns OUTDIR into a docker build context for the
# Dockerfile (the binary, CA certificates and the Dockerfile itself), for those who build the image
# with docker. Releases are built by scripts/release.sh, which needs no Docker daemon.
#   scripts/build.sh [OUTDIR]        default OUTDIR: dist
#   VERSION=1.2.3 scripts/build.sh   version stamped into the binary and the image labels
#   GOARCH=arm64 scripts/build.sh    another architecture (a static binary needs no emulation)
#
# Without VERSION, the version comes from git: X.Y.Z at a clean commit tagged vX.Y.Z, else what
# git describe says (1.2.3-4-gabcdef0, -dirty with changes). COMMIT and DATE default to the
# commit's hash and time, so that two builds of one commit are the same.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
mkdir -p "$out"

version=${VERSION:-$(git describe --tags --match 'v[0-9]*' --always --dirty 2>/dev/null || echo dev)}
version=${version#v}
commit=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
if [[ -z ${DATE:-} ]]; then
	epoch=$(git log -1 --format=%ct HEAD 2>/dev/null || date +%s)
	DATE=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
fi
date=$DATE

# disable_grpc_modules: cloud.google.com/go/storage's own tag that leaves out its gRPC DirectPath
# dependencies (xDS, Envoy's protobufs), which the JSON API this service uses never reaches; they
# cost about 8 MB of resident memory at idle (docs/BENCHMARKS.md).
CGO_ENABLED=0 GOOS=linux go build -trimpath -tags disable_grpc_modules \
	-ldflags "-s -w -X main.version=$version -X main.commit=$commit -X main.date=$date" \
	-o "$out/oci-proxy" ./cmd/oci-proxy
cp /etc/ssl/certs/ca-certificates.crt "$out/ca-certificates.crt"
cp Dockerfile "$out/Dockerfile"
printf '%s\n' "$version" >"$out/VERSION"
echo "built $out/oci-proxy ($version); build the image with:"
echo "  docker build --build-arg VERSION=$version --build-arg REVISION=$commit --build-arg CREATED=$date -t oci-proxy:$version $out"
