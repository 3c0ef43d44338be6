#!/usr/bin/env bash
# Builds the release image of the version tagged at HEAD and pushes it to $IMAGE: one index for
# linux/amd64 and linux/arm64, FROM scratch, assembled by deploy/image without a Docker daemon (a
# static Go binary needs no emulation to cross-build).
#   git checkout v1.2.3 && IMAGE=us-docker.pkg.dev/acme/images/oci-proxy scripts/release.sh
#
# Tags. A release vX.Y.Z is pushed as X.Y.Z and moves X.Y, X and latest, each only when no higher
# release tag (in this clone: git fetch --tags first) already owns it, so that a patch to an older
# line moves only its own X.Y. A pre-release vX.Y.Z-rc.N is pushed as X.Y.Z-rc.N alone.
#
# Reproducible: the same commit built with the same Go release and the same CA bundle gives the
# same digest. Every time in the image is the commit's (SOURCE_DATE_EPOCH), paths are trimmed,
# and the layer is written byte for byte the same way.
#
# Environment:
#   IMAGE       repository to push to (required); credentials from the Docker configuration
#   PLATFORMS   comma-separated, default linux/amd64,linux/arm64
#   CA_CERTS    CA bundle to ship, default /etc/ssl/certs/ca-certificates.crt
#   SOURCE_URL  org.opencontainers.image.source, default https://github.com/happy-turtle/oci-proxy
#   SBOM        where to write the SPDX SBOM, default dist/release/oci-proxy-VERSION.spdx.json;
#               SBOM= (empty) for none
#   INSECURE=1  talk plain HTTP to the registry (a local one)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'release: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -n ${IMAGE:-} ]] || die "IMAGE is required, e.g. IMAGE=ghcr.io/acme/oci-proxy"
platforms=${PLATFORMS:-linux/amd64,linux/arm64}
ca_certs=${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
source_url=${SOURCE_URL:-https://github.com/happy-turtle/oci-proxy}

# Untracked files count too: go build compiles any .go file in a package directory.
[[ -z $(git status --porcelain) ]] ||
	die "the work tree has changes; a release is built from a clean checkout of its tag:
$(git status --short | head -20)"

num='(0|[1-9][0-9]*)'
final_re="^v$num\\.$num\\.$num\$"
pre_re="^v$num\\.$num\\.$num-rc\\.$num\$"
at_head=$(git tag --points-at HEAD)
finals=$(grep -E "$final_re" <<<"$at_head" || true)
pres=$(grep -E "$pre_re" <<<"$at_head" | sort -V || true)
if [[ -n $finals ]]; then
	# A release tag on a commit that also carries its release candidates wins: that is the
	# promotion of the last candidate.
	(($(wc -l <<<"$finals") == 1)) || die "several release tags at HEAD: $(echo $finals)"
	tag=$finals prerelease=
elif [[ -n $pres ]]; then
	tag=$(tail -1 <<<"$pres") prerelease=1
else
	die "HEAD ($(git rev-parse --short HEAD)) has no tag vX.Y.Z or vX.Y.Z-rc.N${at_head:+ (it has: $(echo $at_head))}"
fi
version=${tag#v}

tags=("$version")
if [[ -z $prerelease ]]; then
	IFS=. read -r major minor _ <<<"$version"
	released=$(git tag --list 'v*' | grep -E "$final_re" | sort -V)
	highest() { grep -E "$1" <<<"$released" | tail -1; }
	[[ $(highest "^v$major\\.$minor\\.") == "$tag" ]] && tags+=("$major.$minor")
	[[ $(highest "^v$major\\.") == "$tag" ]] && tags+=("$major")
	[[ $(tail -1 <<<"$released") == "$tag" ]] && tags+=(latest)
fi

commit=$(git rev-parse HEAD)
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct HEAD)
export SOURCE_DATE_EPOCH
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
log "$tag at $commit ($created): pushing $IMAGE as ${tags[*]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin_args=()
for p in ${platforms//,/ }; do
	IFS=/ read -r goos goarch variant <<<"$p"
	goarm=
	[[ $goarch == arm && -n $variant ]] && goarm=${variant#v}
	out="$work/${p//\//-}/oci-proxy"
	start=$SECONDS
	# Everything that changes the binary is pinned here rather than taken from the caller's
	# environment: microarchitecture levels, VCS stamping, cgo; and the build tags (see
	# scripts/build.sh for disable_grpc_modules).
	env CGO_ENABLED=0 GOOS="$goos" GOARCH="$goarch" GOARM="$goarm" GOAMD64=v1 GOARM64=v8.0 \
		GOFLAGS=-buildvcs=true GOEXPERIMENT= \
		go build -trimpath -tags disable_grpc_modules -o "$out" \
		-ldflags "-s -w -X main.version=$version -X main.commit=$commit -X main.date=$created" \
		./cmd/oci-proxy
	log "built $p in $((SECONDS - start))s"
	bin_args+=(--binary "$p=$out")
done

args=(--repo "$IMAGE" --ca-certs "$ca_certs")
for t in "${tags[@]}"; do args+=(--tag "$t"); done
for l in \
	title=oci-proxy \
	"description=Gives container images a domain of their own and redirects every pull to the nearest mirror" \
	"version=$version" \
	"revision=$commit" \
	"source=$source_url" \
	licenses=Apache-2.0; do
	args+=(--label "org.opencontainers.image.$l")
done
sbom=${SBOM-dist/release/oci-proxy-$version.spdx.json}
if [[ -n $sbom ]]; then
	mkdir -p "$(dirname "$sbom")"
	args+=(--sbom "$sbom")
fi
case ${INSECURE:-} in 1 | true) args+=(--insecure) ;; esac

start=$SECONDS
ref=$(go run ./deploy/image "${args[@]}" "${bin_args[@]}")
log "pushed $ref in $((SECONDS - start))s${sbom:+; SBOM in $sbom}"
echo "$ref"
