#!/usr/bin/env bash
# Builds the static oci-proxy binary and turns OUTDIR into a docker build context for the
# Dockerfile (the binary, CA certificates and the Dockerfile itself), the way release tools
# package Go binaries: the image is assembled FROM scratch around a binary built here.
#   scripts/build.sh [OUTDIR]        default OUTDIR: dist
#   VERSION=1.2.3 scripts/build.sh   version stamped into the binary and the image labels
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
mkdir -p "$out"

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
date=${DATE:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}

CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X main.version=$version -X main.commit=$commit -X main.date=$date" \
	-o "$out/oci-proxy" ./cmd/oci-proxy
cp /etc/ssl/certs/ca-certificates.crt "$out/ca-certificates.crt"
cp Dockerfile "$out/Dockerfile"
printf '%s\n' "$version" >"$out/VERSION"
echo "built $out/oci-proxy ($version); build the image with:"
echo "  docker build --build-arg VERSION=$version --build-arg REVISION=$commit --build-arg CREATED=$date -t oci-proxy:$version $out"
