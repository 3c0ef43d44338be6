#!/usr/bin/env bash
# Installs the real components the end-to-end tests run against, on a Debian machine, as root.
# Idempotent: installs only what is missing, so a second run costs a few milliseconds and CI can
# call it before every test run. Go tools land in $(go env GOPATH)/bin, where the test harness
# (internal/testenv.LookPath) finds them without a PATH change.
set -euo pipefail

log() { printf 'deps: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# package:program pairs. A package counts as present when dpkg knows it or its program is already
# on PATH (a newer docker CLI in /usr/local/bin must not pull in the distribution's).
apt_wanted=(
	docker-registry:docker-registry
	docker.io:dockerd
	skopeo:skopeo
	podman:podman
	curl:curl
	# headless, driven by the index page's end-to-end test (chromedp)
	chromium:chromium
	# scrapes two proxy replicas in the demand end-to-end test
	prometheus:prometheus
	git:git
	# podman runs as root with vfs storage in the tests; these are what it expects around it
	# (apt installs them as its recommendations, listed here so a --no-install-recommends
	# image gets them too).
	uidmap:newuidmap
	fuse-overlayfs:fuse-overlayfs
	slirp4netns:slirp4netns
	iptables:iptables
)

missing=()
for pair in "${apt_wanted[@]}"; do
	pkg=${pair%%:*} prog=${pair##*:}
	if dpkg -s "$pkg" >/dev/null 2>&1 || command -v "$prog" >/dev/null 2>&1; then
		continue
	fi
	missing+=("$pkg")
done

if ((${#missing[@]})); then
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${missing[*]}"
		sudo=(sudo)
	fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq || die "apt-get update failed"
	"${sudo[@]}" apt-get install -y -qq "${missing[@]}" || die "apt-get install ${missing[*]} failed"
	for pkg in "${missing[@]}"; do
		dpkg -s "$pkg" >/dev/null 2>&1 || die "$pkg is still not installed"
	done
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH"
gobin=$(go env GOBIN)
[[ -n $gobin ]] || gobin="$(go env GOPATH)/bin"

go_wanted=(
	crane:github.com/google/go-containerregistry/cmd/crane@v0.22.1
	fake-gcs-server:github.com/fsouza/fake-gcs-server@v1.56.1
	versitygw:github.com/versity/versitygw/cmd/versitygw@v1.8.0
	staticcheck:honnef.co/go/tools/cmd/staticcheck@v0.8.2
)
for pair in "${go_wanted[@]}"; do
	prog=${pair%%:*} pkg=${pair#*:}
	if [[ -x $gobin/$prog ]]; then
		continue
	fi
	log "go install $pkg (versitygw takes a few minutes)"
	# Outside the module: `go install pkg@version` must not read or touch this repo's go.mod.
	(cd / && GOFLAGS= go install "$pkg") || die "go install $pkg failed"
	[[ -x $gobin/$prog ]] || die "$prog is not in $gobin after go install"
done

log "all components present"
