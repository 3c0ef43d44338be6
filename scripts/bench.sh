#!/usr/bin/env bash
# Measures the service under load next to the bare net/http stack (internal/benchsrv, a server
# that answers every request with a 307 and does nothing else), in one run on one machine, and
# prints every figure as a ratio to it as well as in absolute terms:
#
#   requests/s and its ratio to bare Go's in the same round, p50 and p99 latency (p99 also as a
#   ratio), the server's CPU time per request (utime + stime from /proc/PID/stat, also as a
#   ratio) and its peak RSS during the run (VmHWM, reset before each run through
#   /proc/PID/clear_refs). Each target is compared with bare Go measured just before and just
#   after it (the mean of the two), then the median and range over the rounds printed.
#
# Targets: bare Go, and bare Go with net/http's read, write and idle timeouts as internal/app's
# NewServer sets them (bare-timeouts; the service's public listener keeps coarser deadlines of its
# own, internal/app/deadline.go); the manifest redirect and the blob redirect to an http mirror
# with the repository's config.yaml (GeoIP City
# + ASN, three mirrors, metrics), with the request log off (--log-level warn); the same manifest
# redirect with the request log at info, written to a file; blob redirects to an S3 mirror
# (versitygw) and a GCS mirror (fake-gcs-server) with their signed URLs cached; a proxy-mode
# manifest answered from the cache of a route whose upstream is a distribution registry
# (docker-registry); and, with GEOIP_CITY, blob redirects for 4096 clients spread over the
# IPv4 space, located in that database.
#
#   scripts/bench.sh                          3 interleaved rounds of 10 s per target
#   ROUNDS=5 DURATION=20 scripts/bench.sh     longer
#   TARGETS='manifest|blob-http' scripts/bench.sh   bare and the targets whose name matches
#   BASELINE=<git rev> scripts/bench.sh       also the service built from <rev> (targets @base)
#   PAIRED=0 scripts/bench.sh                 bare Go once a round instead of around every target
#                                             (half the time; ratios then span minutes of load)
#   SVC_GOGC=25 scripts/bench.sh              the service (not bare Go) with GOGC=25
#   GEOIP_CITY=GeoLite2-City.mmdb GEOIP_ASN=GeoLite2-ASN.mmdb scripts/bench.sh
#
# wrk runs with THREADS threads (2) and CONNECTIONS connections (64) on the same cores as the
# servers, and each round takes the targets in an order of its own. Everything listens on
# 127.0.0.0/8; run as root, the measurement runs in a network namespace of its own (unshare -n),
# so nothing else can reach the servers or take their ports. Needs wrk, jq, openssl (apt-get
# install wrk jq openssl), and curl, docker-registry, versitygw, fake-gcs-server and crane
# (scripts/deps.sh installs these).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
TARGETS=${TARGETS:-.}
BASELINE=${BASELINE:-}
PAIRED=${PAIRED:-1}

need() {
	command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is missing (${2:-see scripts/deps.sh})" >&2; exit 1; }
}

# Phase 1, outside the namespace (building may need the module proxy): build, then run phase 2.
if [[ -z ${BENCH_WORK:-} ]]; then
	need go
	need wrk "apt-get install -y wrk"
	need curl
	need jq
	need openssl
	need docker-registry "apt-get install -y docker-registry"
	gobin=$(go env GOPATH)/bin
	for t in versitygw fake-gcs-server crane; do
		[[ -x $gobin/$t ]] || { echo "bench: $gobin/$t is missing (scripts/deps.sh installs it)" >&2; exit 1; }
	done
	work=$(mktemp -d /tmp/oci-proxy-bench.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	echo "building into $work" >&2
	go build -trimpath -tags disable_grpc_modules -o "$work/oci-proxy" ./cmd/oci-proxy
	go build -trimpath -o "$work/benchsrv" ./internal/benchsrv
	if [[ -n $BASELINE ]]; then
		mkdir "$work/base-src"
		git archive "$BASELINE" | tar -x -C "$work/base-src"
		(cd "$work/base-src" && go build -trimpath -tags disable_grpc_modules -o "$work/oci-proxy-base" ./cmd/oci-proxy)
		git rev-parse --short "$BASELINE" >"$work/base-rev"
	fi
	export BENCH_WORK=$work BENCH_GOBIN=$gobin
	if [[ $(id -u) == 0 ]] && command -v unshare >/dev/null; then
		unshare --net -- bash "$0"
	else
		echo "bench: not root: measuring on the host's loopback, where other processes may interfere" >&2
		BENCH_SHARED_NET=1 bash "$0"
	fi
	exit
fi

# Phase 2: start everything on loopback, measure, summarise.
work=$BENCH_WORK
gobin=$BENCH_GOBIN
if [[ -z ${BENCH_SHARED_NET:-} ]]; then
	ip link set lo up
fi
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# wait_http URL: until anything answers, at most 10 s.
wait_http() {
	for _ in $(seq 100); do
		curl -s -o /dev/null --max-time 1 "$1" && return 0
		sleep 0.1
	done
	echo "bench: nothing answers at $1" >&2
	exit 1
}

blob_hex=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 # sha256 of nothing
blob=sha256:$blob_hex
manifest_location=https://us-central1-docker.pkg.dev/v2/oci-proxy/oci-proxy-images/oci-proxy/manifests/1.0.0

# The reference.
"$work/benchsrv" --listen 127.0.0.1:18090 --location "$manifest_location" & pids+=($!)
bare_pid=$!
# The same with net/http's timeouts as NewServer sets them: what they cost on their own.
"$work/benchsrv" --listen 127.0.0.1:18091 --location "$manifest_location" --timeouts & pids+=($!)
bare_timeouts_pid=$!
wait_http http://127.0.0.1:18090/
wait_http http://127.0.0.1:18091/

# S3: versitygw on 127.0.0.3 with a bucket holding the blob.
ak=AKBENCH$(openssl rand -hex 6)
sk=$(openssl rand -hex 20)
mkdir -p "$work/s3"
ROOT_ACCESS_KEY_ID=$ak ROOT_SECRET_ACCESS_KEY=$sk VGW_REGION=us-east-1 \
	"$gobin/versitygw" --port 127.0.0.3:17000 --quiet posix "$work/s3" >"$work/versitygw.log" 2>&1 & pids+=($!)
wait_http http://127.0.0.3:17000/
s3curl() { curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" -u "$ak:$sk" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }
s3curl -X PUT http://127.0.0.3:17000/bench >/dev/null
: >"$work/empty"
s3curl -X PUT --data-binary @"$work/empty" "http://127.0.0.3:17000/bench/blobs/sha256/$blob_hex" >/dev/null
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$ak" "$sk" >"$work/aws-credentials"
: >"$work/aws-config"

# GCS: fake-gcs-server on 127.0.0.4 with the same, and a service-account key to sign with.
"$gobin/fake-gcs-server" -scheme http -host 127.0.0.4 -port 17001 -backend memory \
	-public-host 127.0.0.4:17001 -log-level warn >"$work/fake-gcs.log" 2>&1 & pids+=($!)
wait_http http://127.0.0.4:17001/storage/v1/b
curl -sf -X POST -H 'Content-Type: application/json' -d '{"name":"bench"}' \
	'http://127.0.0.4:17001/storage/v1/b?project=bench' >/dev/null
curl -sf -X POST -H 'Content-Type: application/octet-stream' --data-binary @"$work/empty" \
	"http://127.0.0.4:17001/upload/storage/v1/b/bench/o?uploadType=media&name=blobs/sha256/$blob_hex" >/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/sa.pem" 2>/dev/null
jq -n --rawfile key "$work/sa.pem" '{type: "service_account", project_id: "bench",
	private_key_id: "0123456789abcdef", private_key: $key,
	client_email: "bench@bench.iam.gserviceaccount.com", client_id: "1",
	token_uri: "https://oauth2.googleapis.com/token"}' >"$work/sa.json"

# A distribution registry holding one image, the upstream of the proxy-mode route.
cat >"$work/registry.yml" <<EOF
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $work/registry}
  maintenance: {uploadpurging: {enabled: false}}
http: {addr: 127.0.0.2:5000, secret: bench}
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & pids+=($!)
wait_http http://127.0.0.2:5000/v2/
mkdir -p "$work/layer" && echo bench >"$work/layer/hello" && tar -C "$work/layer" -cf "$work/layer.tar" hello
"$gobin/crane" append --insecure -f "$work/layer.tar" -t 127.0.0.2:5000/bench/app:1.0 >/dev/null 2>&1

# The storage configuration: an S3 mirror in the US, a GCS mirror in Germany, and a proxy-mode
# route to the registry.
storage_config() { # listen admin
	cat <<EOF
listen: "$1"
upstream: http://127.0.0.2:5000/v2/bench/
trusted_proxies: ["127.0.0.0/8"]
geoip:
  database: $repo/testdata/geoip/city.mmdb
  asn_database: $repo/testdata/geoip/asn.mmdb
admin: {enabled: true, listen: "$2"}
routes:
  - prefix: cached/
    upstream: http://127.0.0.2:5000/v2/bench/
    mode: proxy
mirrors:
  - name: s3-us
    provider: s3
    bucket: bench
    endpoint: http://127.0.0.3:17000
    region: us-east-1
    credentials_file: $work/aws-credentials
    prefix: blobs/
    country: US
    location: {lat: 38.9, lon: -77.4}
  - name: gcs-de
    provider: gcs
    bucket: bench
    credentials_file: $work/sa.json
    prefix: blobs/
    country: DE
    location: {lat: 50.1, lon: 8.7}
EOF
}

# The repository's config.yaml with its files named absolutely and its admin listener moved, for
# a second copy of the service next to the one that runs on config.yaml itself.
moved_config() { # admin
	sed -e "s#testdata/geoip/#$repo/testdata/geoip/#" -e "s#127.0.0.1:9090#$1#" "$repo/config.yaml"
}

declare -A pid_of
# serve NAME BINARY CONFIG LISTEN [FLAGS...]: starts the service; the request log is discarded.
serve() {
	local name=$1 bin=$2 cfg=$3 listen=$4
	shift 4
	env -u AWS_PROFILE -u AWS_REGION -u AWS_DEFAULT_REGION -u HTTP_PROXY -u HTTPS_PROXY \
		AWS_CONFIG_FILE="$work/aws-config" AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
		STORAGE_EMULATOR_HOST=127.0.0.4:17001 ${SVC_GOGC:+GOGC=$SVC_GOGC} \
		"$bin" serve --config "$cfg" --listen "$listen" "$@" 2>"$work/$name.err" >/dev/null &
	pids+=($!)
	pid_of[$name]=$!
	wait_http "http://$listen/healthz"
}

# A copy of config.yaml with other GeoIP databases (GEOIP_CITY, GEOIP_ASN), for the spread target.
geo_config() { # admin
	local asn=()
	[[ -n ${GEOIP_ASN:-} ]] && asn=(-e "s#asn_database: .*#asn_database: $GEOIP_ASN#")
	moved_config "$1" | sed -e "s#database: .*/city.mmdb#database: $GEOIP_CITY#" "${asn[@]}"
}

# rss_line PID: resident memory, anonymous and file-backed (the executable's pages), in MB.
rss_line() {
	awk '/^(VmRSS|RssAnon|RssFile)/ {sub(":", "", $1); printf "%s %d MB  ", $1, $2 / 1024}' "/proc/$1/status"
}

declare -A idle
# start_build SUFFIX BINARY OFFSET: the services of one build, on ports 18080+OFFSET and up, admin
# listeners on 9090+OFFSET and up. The first build runs on the repository's config.yaml itself.
start_build() {
	local sfx=$1 bin=$2 off=$3
	local svc_cfg=$repo/config.yaml
	if ((off > 0)); then
		svc_cfg=$work/svc$sfx.yaml
		moved_config "127.0.0.1:$((9090 + off))" >"$svc_cfg"
	fi
	storage_config "127.0.0.1:$((18081 + off))" "127.0.0.1:$((9091 + off))" >"$work/storage$sfx.yaml"
	moved_config "127.0.0.1:$((9092 + off))" >"$work/info$sfx.yaml"
	serve "svc$sfx" "$bin" "$svc_cfg" "127.0.0.1:$((18080 + off))" --log-level warn
	idle["svc$sfx"]=$(rss_line "${pid_of[svc$sfx]}")
	serve "storage$sfx" "$bin" "$work/storage$sfx.yaml" "127.0.0.1:$((18081 + off))" --log-level warn
	# The request log goes to stderr, here a file: the cost of formatting and writing one line per
	# request, not that of a log pipeline reading it.
	serve "info$sfx" "$bin" "$work/info$sfx.yaml" "127.0.0.1:$((18083 + off))"
	if [[ -n ${GEOIP_CITY:-} ]]; then
		geo_config "127.0.0.1:$((9094 + off))" >"$work/geo$sfx.yaml"
		serve "geo$sfx" "$bin" "$work/geo$sfx.yaml" "127.0.0.1:$((18084 + off))" --log-level warn
		idle["geo$sfx"]=$(rss_line "${pid_of[geo$sfx]}")
	fi
}

# Clients spread over the IPv4 unicast space, for the spread target: 4096 addresses, the same in
# every run, formatted into requests once so that wrk spends little more per request than with -H.
cat >"$work/spread.lua" <<'EOF'
local reqs, n, i = {}, 4096, 0
init = function()
	math.randomseed(42)
	for k = 1, n do
		local ip = string.format("%d.%d.%d.%d", math.random(1, 223), math.random(0, 255),
			math.random(0, 255), math.random(1, 254))
		reqs[k] = wrk.format(nil, nil, {["X-Forwarded-For"] = ip})
	end
end
request = function()
	i = i % n + 1
	return reqs[i]
end
EOF

start_build "" "$work/oci-proxy" 0
[[ -n $BASELINE ]] && start_build @base "$work/oci-proxy-base" 100

# Targets: name|process|URL|header (or @wrk script)|expected X-Mirror (or - for any)
accept='Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json'
targets=(
	"bare|bare|http://127.0.0.1:18090/v2/oci-proxy/manifests/1.0.0||-"
	"bare-timeouts|bare-timeouts|http://127.0.0.1:18091/v2/oci-proxy/manifests/1.0.0||-"
)
add_targets() { # SUFFIX OFFSET
	local sfx=$1 off=$2
	local svc=http://127.0.0.1:$((18080 + off)) storage=http://127.0.0.1:$((18081 + off))
	targets+=(
		"manifest$sfx|svc$sfx|$svc/v2/oci-proxy/manifests/1.0.0||-"
		"manifest-log-info$sfx|info$sfx|http://127.0.0.1:$((18083 + off))/v2/oci-proxy/manifests/1.0.0||-"
		"blob-http$sfx|svc$sfx|$svc/v2/oci-proxy/blobs/$blob|X-Forwarded-For: 89.160.20.112|eu-west"
		"blob-s3$sfx|storage$sfx|$storage/v2/app/blobs/$blob|X-Forwarded-For: 216.160.83.56|s3-us"
		"blob-gcs$sfx|storage$sfx|$storage/v2/app/blobs/$blob|X-Forwarded-For: 89.160.20.112|gcs-de"
		"proxy-manifest$sfx|storage$sfx|$storage/v2/cached/app/manifests/1.0|$accept|-"
	)
	if [[ -n ${GEOIP_CITY:-} ]]; then
		targets+=("blob-spread$sfx|geo$sfx|http://127.0.0.1:$((18084 + off))/v2/oci-proxy/blobs/$blob|@$work/spread.lua|-")
	fi
}
add_targets "" 0
[[ -n $BASELINE ]] && add_targets @base 100
selected=()
for t in "${targets[@]}"; do
	name=${t%%|*}
	[[ $name == bare ]] || [[ $name =~ $TARGETS ]] && selected+=("$t")
done
pid_of[bare]=$bare_pid
pid_of[bare-timeouts]=$bare_timeouts_pid

# Each target must answer as expected before it is measured, and once warm: the first blob
# request checks presence and signs, the first proxy-mode one fills the cache.
for t in "${selected[@]}"; do
	IFS='|' read -r name proc url header mirror <<<"$t"
	hdr=() curl_hdr=()
	case $header in
	"") ;;
	@*) hdr=(-s "${header#@}") curl_hdr=(-H "X-Forwarded-For: 81.2.69.142") ;;
	*) hdr=(-H "$header") curl_hdr=(-H "$header") ;;
	esac
	out=$(curl -s -o /dev/null -D - "${curl_hdr[@]}" "$url")
	status=$(awk 'NR==1 {print $2}' <<<"$out")
	got=$(awk 'tolower($1)=="x-mirror:" {print $2}' <<<"$out" | tr -d '\r')
	want_status=307
	[[ $name == proxy-manifest* ]] && want_status=200
	if [[ $status != "$want_status" || ($mirror != - && $got != "$mirror") ]]; then
		echo "bench: $name: status $status, X-Mirror '$got' (want $want_status, $mirror)" >&2
		echo "$out" >&2
		exit 1
	fi
	wrk -t"$THREADS" -c"$CONNECTIONS" -d1s "${hdr[@]}" "$url" >/dev/null
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# to_us VALUE: wrk's latency (850.00us, 1.20ms, 2.00s) in microseconds.
to_us() {
	awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) f = 1; else if (v ~ /ms$/) f = 1000; else if (v ~ /m$/) f = 60e6; else f = 1e6; printf "%.0f", n * f }'
}

results=$work/results
: >"$results"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# measure ROUND SLOT TARGET: one wrk run, appended to $results.
measure() {
	local round=$1 slot=$2 t=$3
	local name proc url header mirror pid hdr c0 c1 out hwm reqs rps p50 p99 bad errs cpu
	IFS='|' read -r name proc url header mirror <<<"$t"
	pid=${pid_of[$proc]}
	hdr=()
	case $header in
	"") ;;
	@*) hdr=(-s "${header#@}") ;;
	*) hdr=(-H "$header") ;;
	esac
	echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true
	c0=$(cpu_ticks "$pid")
	out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${hdr[@]}" "$url")
	c1=$(cpu_ticks "$pid")
	hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
	reqs=$(awk '/requests in/ {print $1}' <<<"$out")
	rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
	p50=$(to_us "$(awk '$1=="50%" {print $2}' <<<"$out")")
	p99=$(to_us "$(awk '$1=="99%" {print $2}' <<<"$out")")
	bad=$(awk '/Non-2xx or 3xx/ {print $5}' <<<"$out")
	errs=$(awk '/Socket errors/ {print $0}' <<<"$out")
	cpu=$(awk -v d="$((c1 - c0))" -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
	echo "$round $name $rps $p50 $p99 $cpu $hwm ${bad:-0} $slot" >>"$results"
	printf 'round %d %-20s %10.0f req/s  p50 %6d us  p99 %6d us  %5.1f us CPU/req  peak %3d MB%s%s\n' \
		"$round" "$name" "$rps" "$p50" "$p99" "$cpu" "$((hwm / 1024))" "${bad:+  non-3xx $bad}" "${errs:+  $errs}" >&2
}
# Each round takes the targets in an order of its own (shuffled, the same for a given round in
# every run), so that no target is always measured right after the same one or at the same point
# of a round, while the machine's other work comes and goes. With PAIRED (the default), bare Go
# runs before the first target and after every target, and each target is compared with the
# mean of the two bare runs around it, seconds away rather than minutes: on a machine shared
# with other work, that is what keeps the ratios steady. PAIRED=0 runs bare once a round.
others=()
for t in "${selected[@]}"; do [[ ${t%%|*} == bare ]] || others+=("$t"); done
n_sel=${#others[@]}
for round in $(seq "$ROUNDS"); do
	order=$(awk -v n="$n_sel" -v seed="$round" 'BEGIN {
		srand(seed); for (i = 0; i < n; i++) a[i] = i
		for (i = n - 1; i > 0; i--) { j = int(rand() * (i + 1)); t = a[i]; a[i] = a[j]; a[j] = t }
		for (i = 0; i < n; i++) printf "%d ", a[i] }')
	slot=0
	if [[ $PAIRED == 1 ]]; then
		measure "$round" "$slot" "${selected[0]}"
	else
		# Bare once, at a place of its own in the round.
		k=$(awk -v n="$((n_sel + 1))" -v seed="$round" 'BEGIN { srand(seed + 1000); print int(rand() * n) }')
		order=$(awk -v o="$order" -v k="$k" 'BEGIN { n = split(o, a, " "); for (i = 1; i <= n; i++) { if (i - 1 == k) printf "b "; printf "%s ", a[i] } if (k == n) printf "b" }')
	fi
	for k in $order; do
		slot=$((slot + 1))
		if [[ $k == b ]]; then
			measure "$round" "$slot" "${selected[0]}"
			continue
		fi
		measure "$round" "$slot" "${others[$k]}"
		if [[ $PAIRED == 1 ]]; then
			slot=$((slot + 1))
			measure "$round" "$slot" "${selected[0]}"
		fi
	done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
sleep 2
declare -A after
for p in "${!idle[@]}"; do after[$p]=$(rss_line "${pid_of[$p]}"); done

# The summary: medians over the rounds, ratios taken round by round against bare Go.
echo
echo "$(go env GOVERSION 2>/dev/null || true), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, servers and wrk on the same cores$([[ -z ${BENCH_SHARED_NET:-} ]] && echo ', own network namespace')"
[[ -n $BASELINE ]] && echo "@base: the service built from $(cat "$work/base-rev")"
for p in $(printf '%s\n' "${!idle[@]}" | sort); do
	echo "$p: idle after start: ${idle[$p]}"
	echo "$p: idle after load:  ${after[$p]}"
done
[[ -n ${GEOIP_CITY:-} ]] && echo "geo: config.yaml with $GEOIP_CITY${GEOIP_ASN:+ and $GEOIP_ASN}"
echo
awk -v order="$(printf '%s\n' "${selected[@]}" | cut -d'|' -f1 | tr '\n' ' ')" '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function lo(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] < m) m = a[i]; return m }
function hi(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]; return m }
{
	r = $1; t = $2; s = $9
	bad[t] += $8
	rounds[r] = 1
	if (t == "bare") {
		brps[r, s] = $3; bp99[r, s] = $5; bcpu[r, s] = $6; nb[r]++
		nb_all++; a_brps[nb_all] = $3; a_bp50[nb_all] = $4; a_bp99[nb_all] = $5; a_bcpu[nb_all] = $6; bhwm = $7 > bhwm ? $7 : bhwm
		next
	}
	rps[r, t] = $3; p50[r, t] = $4; p99[r, t] = $5; cpu[r, t] = $6; hwm[r, t] = $7; slot[r, t] = s
}
# ref(a, r, s): bare'"'"'s figure a in round r next to slot s: the mean of the runs just before and
# after it when both exist (PAIRED), else the one bare run of the round.
function ref(a, r, s,   n, v, k) {
	if ((r, s - 1) in a && (r, s + 1) in a) return (a[r, s - 1] + a[r, s + 1]) / 2
	for (k in a) { split(k, f, SUBSEP); if (f[1] == r) { n++; v += a[k] } }
	return v / n
}
END {
	printf "| target | requests/s | ratio to bare | p50 | p99 | p99 ratio | CPU/request | CPU ratio | peak RSS |\n"
	printf "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
	nt = split(order, names, " ")
	for (k = 1; k <= nt; k++) {
		t = names[k]; n = 0
		if (t == "bare") {
			printf "| bare | %d | 1.00 | %d µs | %.1f ms | 1.00 | %.1f µs | 1.00 | %d MB |%s\n", median(a_brps, nb_all),
				median(a_bp50, nb_all), median(a_bp99, nb_all) / 1000, median(a_bcpu, nb_all), bhwm / 1024,
				bad[t] ? sprintf(" %d answers not 2xx/3xx", bad[t]) : ""
			continue
		}
		for (r in rounds) {
			n++; s = slot[r, t]
			a_rps[n] = rps[r, t]; a_ratio[n] = rps[r, t] / ref(brps, r, s)
			a_p50[n] = p50[r, t]; a_p99[n] = p99[r, t]; a_p99r[n] = p99[r, t] / ref(bp99, r, s)
			a_cpu[n] = cpu[r, t]; a_cpur[n] = cpu[r, t] / ref(bcpu, r, s); a_hwm[n] = hwm[r, t]
		}
		ratio = sprintf("%.2f (%.2f–%.2f)", median(a_ratio, n), lo(a_ratio, n), hi(a_ratio, n))
		p99r = sprintf("%.2f", median(a_p99r, n))
		cpur = sprintf("%.2f (%.2f–%.2f)", median(a_cpur, n), lo(a_cpur, n), hi(a_cpur, n))
		printf "| %s | %d | %s | %d µs | %.1f ms | %s | %.1f µs | %s | %d MB |%s\n", t, median(a_rps, n), ratio,
			median(a_p50, n), median(a_p99, n) / 1000, p99r, median(a_cpu, n), cpur, hi(a_hwm, n) / 1024,
			bad[t] ? sprintf(" %d answers not 2xx/3xx", bad[t]) : ""
	}
}' "$results"
