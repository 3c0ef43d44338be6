package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// The mirrors of the geo tests: `http` mirrors, each a static file server of its own on its own
// loopback address, under the key layout base_url + prefix + "sha256/<hex>".
type geoMirror struct {
	name     string
	country  string
	lat, lon float64
	host     string   // its own loopback address
	path     string   // path of base_url
	prefix   string   // the configured prefix: object key = prefix + "sha256/<hex>"
	only     []string // only_countries
}

var geoMirrors = []geoMirror{
	{name: "eu-west", country: "DE", lat: 50.1, lon: 8.7, host: "127.0.0.5", path: "/", prefix: "blobs/"},
	{name: "us-east", country: "US", lat: 38.9, lon: -77.4, host: "127.0.0.6", path: "/registry/"},
	{name: "asia", country: "SG", lat: 1.35, lon: 103.8, host: "127.0.0.7", path: "/", prefix: "oci/cache/"},
	// Scoped to Brazil's clients: everyone else must never be sent to it, even for a blob only
	// it holds.
	{name: "br-south", country: "BR", lat: -23.5, lon: -46.6, host: "127.0.0.8", path: "/", only: []string{"BR"}},
}

// geoTier is a group of mirrors that rank equally for a client, and the X-Mirror-Reason of
// choosing any of them.
type geoTier struct {
	reason  string
	mirrors []string
}

func tier(reason string, mirrors ...string) geoTier { return geoTier{reason, mirrors} }

// geoPlace is a client address of the test GeoIP database (testdata/geoip/README.md) and the
// mirrors that may serve it, best first. The distances behind the order are great-circle
// distances between the database's coordinates and the mirrors' locations.
type geoPlace struct {
	name  string
	addr  string
	tiers []geoTier
}

// The reasons of the upstream fallbacks.
const (
	reasonNoGeo      = "fallback:no-geo"
	reasonNotPresent = "fallback:not-present"
)

var (
	// Frankfurt: eu-west 2 km, us-east 6,500 km, asia 10,260 km.
	placeDE = geoPlace{"DE", "89.160.20.112", []geoTier{
		tier("country", "eu-west"), tier("distance", "us-east"), tier("distance", "asia")}}
	placeDE6 = geoPlace{"DE-ipv6", "2001:db8:de::1", placeDE.tiers}
	// London: us-east 5,900 km, asia 10,860 km.
	placeGB = geoPlace{"GB", "81.2.69.142", []geoTier{
		tier("continent", "eu-west"), tier("distance", "us-east"), tier("distance", "asia")}}
	// A record with a country but no coordinates: beyond the continent, nothing tells the other
	// mirrors apart, so the weight (rendezvous hashing) does.
	placeFR = geoPlace{"FR-no-coordinates", "198.51.100.1", []geoTier{
		tier("continent", "eu-west"), tier("weight", "us-east", "asia")}}
	// Seattle: eu-west 8,200 km, asia 12,900 km.
	placeUS = geoPlace{"US", "216.160.83.56", []geoTier{
		tier("country", "us-east"), tier("distance", "eu-west"), tier("distance", "asia")}}
	// Ashburn: eu-west 6,500 km, asia 15,550 km.
	placeUSEast = geoPlace{"US-east", "67.43.156.1", placeUS.tiers}
	// Singapore: eu-west 10,260 km, us-east 15,550 km.
	placeSG = geoPlace{"SG", "175.16.199.1", []geoTier{
		tier("country", "asia"), tier("distance", "eu-west"), tier("distance", "us-east")}}
	placeSG6 = geoPlace{"SG-ipv6", "2001:db8:5e::1", placeSG.tiers}
	// Tokyo: asia on the same continent; eu-west 9,350 km, us-east 10,900 km.
	placeJP = geoPlace{"JP", "202.196.224.1", []geoTier{
		tier("continent", "asia"), tier("distance", "eu-west"), tier("distance", "us-east")}}
	// São Paulo: its own scoped mirror; us-east 7,640 km, eu-west 9,800 km, asia 15,900 km.
	placeBR = geoPlace{"BR", "200.160.0.1", []geoTier{
		tier("country", "br-south"), tier("distance", "us-east"), tier("distance", "eu-west"), tier("distance", "asia")}}
	// Sydney: asia 6,300 km, us-east 15,700 km, eu-west 16,500 km; no mirror on its continent.
	placeAU = geoPlace{"AU", "1.128.0.1", []geoTier{
		tier("distance", "asia"), tier("distance", "us-east"), tier("distance", "eu-west")}}
	// No GeoIP record: the unscoped mirrors by weight; br-south's scope cannot be evaluated,
	// which excludes it.
	placeUnknown = geoPlace{"no-record", "192.0.2.1", []geoTier{
		tier(reasonNoGeo, "eu-west", "us-east", "asia")}}
)

// expect returns the mirrors one of which must serve a blob held by holders, and the reason;
// "upstream" when none of the client's mirrors holds it.
func (p geoPlace) expect(holders []string) ([]string, string) {
	for _, tr := range p.tiers {
		var in []string
		for _, m := range tr.mirrors {
			if slices.Contains(holders, m) {
				in = append(in, m)
			}
		}
		if len(in) > 0 {
			return in, tr.reason
		}
	}
	return []string{"upstream"}, reasonNotPresent
}

// The fronts are the trusted load balancers clients reach the proxy through. Each claims its
// clients come from one place, as a real one reports the address it accepted the connection from.
var (
	geoFrontHosts      = map[string]string{"DE": "127.0.0.11", "US": "127.0.0.12", "SG": "127.0.0.13"}
	geoNamedFrontHosts = map[string]string{"DE": "127.0.0.21", "US": "127.0.0.22", "SG": "127.0.0.23"}
	geoFrontPlaces     = map[string]geoPlace{"DE": placeDE, "US": placeUS, "SG": placeSG}
)

// geoEnv is a registry holding a multi-layer image and an index, four mirrors holding some of their
// blobs each, and the proxy behind three trusted fronts.
type geoEnv struct {
	reg     *testenv.Registry
	app     testenv.Image // OCI image: config and 5 layers
	multi   testenv.Image // OCI index: linux/amd64 and linux/arm64, config and 2 layers each
	servers map[string]*testenv.MirrorServer
	holders map[string][]string // digest -> mirrors holding it
	role    map[string]string   // digest -> "app layer 2", for messages

	proxy  *testenv.Proxy
	fronts map[string]*testenv.Front // "DE" -> the front on 127.0.0.11

	// named is a second proxy in front of the same registry and mirrors, whose upstream and
	// mirrors are named by localhost rather than by IP literals: go-containerregistry clients
	// (crane) refuse a redirect to another host's loopback IP literal (see checkAllClients).
	named       *testenv.Proxy
	namedFronts map[string]*testenv.Front
}

// startGeo starts everything; withNamed adds the proxy for go-containerregistry clients.
func startGeo(t *testing.T, withNamed bool) *geoEnv {
	t.Helper()
	bin := needProxy(t)
	g := &geoEnv{
		reg:     testenv.StartRegistry(t, testenv.RegistryOptions{}),
		servers: map[string]*testenv.MirrorServer{},
		holders: map[string][]string{},
		role:    map[string]string{},
	}
	g.app = g.reg.Push(t, upstreamPrefix+"/app:1.0", testenv.OCIImage(t, 5, 4096, "linux/amd64"))
	g.multi = g.reg.PushIndex(t, upstreamPrefix+"/multi:1.0", testenv.OCIIndex(t, 2, 4096, "linux/amd64", "linux/arm64"))

	all := []string{"eu-west", "us-east", "asia", "br-south"}
	amd, arm := g.multi.Child(t, "linux/amd64"), g.multi.Child(t, "linux/arm64")
	for _, p := range []struct {
		role    string
		digest  string
		mirrors []string
	}{
		{"app config", g.app.Config, all},
		{"app layer 0", g.app.Layers[0], []string{"eu-west", "us-east"}},
		{"app layer 1", g.app.Layers[1], []string{"eu-west", "asia"}},
		{"app layer 2", g.app.Layers[2], []string{"us-east", "asia"}},
		{"app layer 3", g.app.Layers[3], nil},
		{"app layer 4", g.app.Layers[4], []string{"br-south"}},
		{"multi amd64 config", amd.Config, []string{"asia"}},
		{"multi amd64 layer 0", amd.Layers[0], []string{"us-east"}},
		{"multi amd64 layer 1", amd.Layers[1], []string{"eu-west"}},
		{"multi arm64 config", arm.Config, all},
		{"multi arm64 layer 0", arm.Layers[0], nil},
		{"multi arm64 layer 1", arm.Layers[1], []string{"eu-west", "asia"}},
	} {
		g.holders[p.digest], g.role[p.digest] = p.mirrors, p.role
	}

	for _, m := range geoMirrors {
		hosts := []string{m.host}
		if withNamed {
			hosts = append(hosts, "127.0.0.1")
		}
		g.servers[m.name] = testenv.StartMirrorServer(t, hosts...)
	}
	for d, ms := range g.holders {
		if len(ms) == 0 {
			continue
		}
		repo := "app"
		if !slices.Contains(g.app.Blobs(), d) {
			repo = "multi"
		}
		b := g.blobBytes(t, repo, d)
		for _, m := range ms {
			g.servers[m].Put(g.keyPath(m, d), b)
		}
	}

	g.proxy, g.fronts = g.startProxy(t, bin, g.reg.URL, geoFrontHosts, func(s *testenv.MirrorServer) string { return s.URLs[0] })
	if withNamed {
		up := "http://" + testenv.Forward(t, g.reg.Host)
		g.named, g.namedFronts = g.startProxy(t, bin, up, geoNamedFrontHosts, func(s *testenv.MirrorServer) string {
			_, port, err := net.SplitHostPort(strings.TrimPrefix(s.URLs[1], "http://"))
			if err != nil {
				t.Fatal(err)
			}
			return "http://localhost:" + port
		})
	}
	return g
}

// startProxy starts oci-proxy with registry (scheme://host:port) as its upstream, the mirrors at
// the URLs base gives, trusting exactly frontHosts, and starts those fronts.
func (g *geoEnv) startProxy(t *testing.T, bin, registry string, frontHosts map[string]string, base func(*testenv.MirrorServer) string) (*testenv.Proxy, map[string]*testenv.Front) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "upstream: %s/v2/%s/\n", registry, upstreamPrefix)
	b.WriteString("trusted_proxies:\n")
	for _, c := range slices.Sorted(maps.Keys(frontHosts)) {
		fmt.Fprintf(&b, "  - %s/32\n", frontHosts[c])
	}
	fmt.Fprintf(&b, "geoip:\n  database: %s\n  asn_database: %s\n", geoDatabase(t, "city.mmdb"), geoDatabase(t, "asn.mmdb"))
	b.WriteString("mirrors:\n")
	for _, m := range geoMirrors {
		fmt.Fprintf(&b, "  - name: %s\n    provider: http\n    base_url: %s%s\n", m.name, base(g.servers[m.name]), m.path)
		if m.prefix != "" {
			fmt.Fprintf(&b, "    prefix: %s\n", m.prefix)
		}
		fmt.Fprintf(&b, "    country: %s\n    location: {lat: %g, lon: %g}\n", m.country, m.lat, m.lon)
		if len(m.only) > 0 {
			fmt.Fprintf(&b, "    only_countries: [%s]\n", strings.Join(m.only, ", "))
		}
	}
	// A loaded test machine must not turn a slow presence check into a fallback.
	b.WriteString("presence:\n  timeout: 5s\n")
	p := testenv.StartProxy(t, bin, b.String())
	fronts := map[string]*testenv.Front{}
	for c, host := range frontHosts {
		fronts[c] = testenv.StartChainFront(t, host, geoFrontPlaces[c].addr, p.URL)
	}
	return p, fronts
}

// geoDatabase returns the absolute path of a test GeoIP database.
func geoDatabase(t *testing.T, file string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "testdata", "geoip", file))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test GeoIP database: %v", err)
	}
	return p
}

// keyPath is the path of digest d on mirror m's server: base_url's path, prefix, sha256/<hex>.
func (g *geoEnv) keyPath(mirror, d string) string {
	for _, m := range geoMirrors {
		if m.name == mirror {
			return m.path + m.prefix + strings.Replace(d, ":", "/", 1)
		}
	}
	panic("no mirror " + mirror)
}

// blobBytes reads a blob straight from the registry and checks its digest.
func (g *geoEnv) blobBytes(t *testing.T, repo, d string) []byte {
	t.Helper()
	ref, err := name.NewDigest(g.reg.Ref(upstreamPrefix+"/"+repo+"@"+d), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := remote.Layer(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("blob %s: %v", ref, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatalf("blob %s: %v", ref, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("blob %s: %v", ref, err)
	}
	if got := testenv.SHA256Digest(b); got != d {
		t.Fatalf("blob %s: content has digest %s", ref, got)
	}
	return b
}

// mirrorURL is where the (IP-literal) proxy must send a client for blob d on mirror m.
func (g *geoEnv) mirrorURL(mirror, d string) string {
	return g.servers[mirror].URL + g.keyPath(mirror, d)
}

func (g *geoEnv) upstreamURL(repo, d string) string {
	return g.reg.URL + "/v2/" + upstreamPrefix + "/" + repo + "/blobs/" + d
}

// geoAnswer is what the proxy answered to a blob request.
type geoAnswer struct {
	Status   int
	Mirror   string
	Reason   string
	Location string
}

func geoAsk(t *testing.T, c *http.Client, method, u string, header http.Header) geoAnswer {
	t.Helper()
	a := testenv.Send(t, c, testenv.NewRequest(t, method, u, header))
	return geoAnswer{a.Status, a.Header.Get("X-Mirror"), a.Header.Get("X-Mirror-Reason"), a.Header.Get("Location")}
}

// checkAnswer checks a's redirect of blob d (in repo) against one of the mirrors want and reason;
// with fetch, it also follows the redirect and checks the content.
func (g *geoEnv) checkAnswer(t *testing.T, what string, a geoAnswer, repo, d string, want []string, reason string, fetch bool) {
	t.Helper()
	if a.Status != http.StatusTemporaryRedirect {
		t.Errorf("%s: status %d, want 307", what, a.Status)
		return
	}
	if !slices.Contains(want, a.Mirror) || a.Reason != reason {
		t.Errorf("%s: X-Mirror %q, X-Mirror-Reason %q; want %v, %q", what, a.Mirror, a.Reason, want, reason)
		return
	}
	wantLoc := g.upstreamURL(repo, d)
	if a.Mirror != "upstream" {
		wantLoc = g.mirrorURL(a.Mirror, d)
	}
	if a.Location != wantLoc {
		t.Errorf("%s: Location %q, want %q", what, a.Location, wantLoc)
		return
	}
	if !fetch {
		return
	}
	resp, err := http.Get(a.Location)
	if err != nil {
		t.Errorf("%s: follow %s: %v", what, a.Location, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || testenv.SHA256Digest(b) != d {
		t.Errorf("%s: %s answered %d with content %s (%v), want %s", what, a.Location, resp.StatusCode, testenv.SHA256Digest(b), err, d)
	}
}

func xff(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }

// TestGeoAnswers checks the proxy's own blob answers (not following them) for clients all over
// the test GeoIP database, as a trusted front reports them, and that nobody else can choose a
// region; and `oci-proxy resolve`.
func TestGeoAnswers(t *testing.T) {
	g := startGeo(t, false)
	front := testenv.NoRedirectClient(t, geoFrontHosts["DE"]) // a trusted front's own address
	blob := func(repo, d string) string { return g.proxy.URL + "/v2/" + repo + "/blobs/" + d }

	t.Run("places", func(t *testing.T) {
		for _, pl := range []geoPlace{placeDE, placeDE6, placeGB, placeFR, placeUS, placeUSEast, placeSG, placeSG6,
			placeJP, placeBR, placeAU, placeUnknown} {
			t.Run(pl.name, func(t *testing.T) {
				for _, d := range g.app.Blobs() {
					want, reason := pl.expect(g.holders[d])
					what := fmt.Sprintf("%s (%s) from %s", d, g.role[d], pl.addr)
					get := geoAsk(t, front, "GET", blob("app", d), xff(pl.addr))
					g.checkAnswer(t, "GET "+what, get, "app", d, want, reason, true)
					if head := geoAsk(t, front, "HEAD", blob("app", d), xff(pl.addr)); head != get {
						t.Errorf("HEAD %s: %+v, GET got %+v", what, head, get)
					}
				}
			})
		}
	})

	t.Run("index-blobs", func(t *testing.T) {
		for _, pl := range []geoPlace{placeDE, placeUS, placeSG} {
			for _, d := range g.multi.Blobs() {
				want, reason := pl.expect(g.holders[d])
				a := geoAsk(t, front, "GET", blob("multi", d), xff(pl.addr))
				g.checkAnswer(t, fmt.Sprintf("GET %s (%s) from %s", d, g.role[d], pl.addr), a, "multi", d, want, reason, false)
			}
		}
	})

	t.Run("manifests-stay-upstream", func(t *testing.T) {
		a := geoAsk(t, front, "GET", g.proxy.URL+"/v2/multi/manifests/1.0", xff(placeSG.addr))
		wantLoc := g.reg.URL + "/v2/" + upstreamPrefix + "/multi/manifests/1.0"
		if a.Status != http.StatusTemporaryRedirect || a.Location != wantLoc || a.Mirror != "" {
			t.Errorf("manifest: %+v, want 307 to %s without X-Mirror", a, wantLoc)
		}
	})

	// Who may say where the client is: only the trusted fronts, and only about the hops left of
	// them.
	t.Run("forwarding", func(t *testing.T) {
		cfg, l2, l3 := g.app.Config, g.app.Layers[2], g.app.Layers[3]
		local := testenv.NoRedirectClient(t, "")          // 127.0.0.1, as the kernel picks
		other := testenv.NoRedirectClient(t, "127.0.0.9") // another untrusted host
		for _, tc := range []struct {
			name   string
			c      *http.Client
			header http.Header
			place  geoPlace
			same   *http.Client // when set: the answer must equal this client's without headers
		}{
			{"untrusted-xff", local, xff(placeDE.addr), placeUnknown, local},
			{"untrusted-xff-list", local, xff(placeSG.addr + ", " + placeDE.addr), placeUnknown, local},
			{"untrusted-forwarded", local, http.Header{"Forwarded": {"for=" + placeSG.addr}}, placeUnknown, local},
			{"untrusted-other-host", other, xff(placeSG.addr), placeUnknown, other},
			{"trusted-without-header", front, nil, placeUnknown, nil},
			{"trusted-forwarded-not-believed", front, http.Header{"Forwarded": {"for=" + placeSG.addr}}, placeUnknown, nil},
			{"trusted-spoofed-left-hop", front, xff(placeSG.addr + ", " + placeDE.addr), placeDE, nil},
			{"trusted-chain", front, xff(placeDE.addr + ", " + geoFrontHosts["US"]), placeDE, nil},
			{"untrusted-hop-in-chain", front, xff(placeDE.addr + ", 127.0.0.9"), placeUnknown, nil},
			{"ipv4-mapped-hop", front, xff("::ffff:" + placeSG.addr), placeSG, nil},
			{"two-xff-headers", front, http.Header{"X-Forwarded-For": {placeSG.addr, placeUS.addr}}, placeUS, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, d := range []string{cfg, l2, l3} {
					want, reason := tc.place.expect(g.holders[d])
					for _, method := range []string{"GET", "HEAD"} {
						a := geoAsk(t, tc.c, method, blob("app", d), tc.header)
						g.checkAnswer(t, fmt.Sprintf("%s %s (%s)", method, d, g.role[d]), a, "app", d, want, reason, false)
						if tc.same != nil {
							if b := geoAsk(t, tc.same, method, blob("app", d), nil); a != b {
								t.Errorf("%s %s: forwarding headers of an untrusted client changed the answer: %+v, without them %+v", method, d, a, b)
							}
						}
					}
				}
			})
		}
		// Through a real front: the client's own X-Forwarded-For is kept on the left, and the
		// front's hop decides.
		t.Run("front-appends", func(t *testing.T) {
			c := testenv.NoRedirectClient(t, "")
			for pl, fr := range g.fronts {
				want, reason := geoFrontPlaces[pl].expect(g.holders[l2])
				a := geoAsk(t, c, "GET", fr.URL+"/v2/app/blobs/"+l2, xff(placeBR.addr))
				g.checkAnswer(t, fmt.Sprintf("GET %s through the %s front", l2, pl), a, "app", l2, want, reason, false)
			}
		})
	})

	t.Run("resolve", func(t *testing.T) { g.checkResolve(t) })
}

// resolveJSON is the part of `oci-proxy resolve --json` the tests read.
type resolveJSON struct {
	Client struct {
		Addr      string `json:"addr"`
		Known     bool   `json:"known"`
		Country   string `json:"country"`
		Continent string `json:"continent"`
	} `json:"client"`
	Mirrors []struct {
		Name       string   `json:"name"`
		Position   int      `json:"position"`
		Tier       string   `json:"tier"`
		DistanceKm *float64 `json:"distance_km"`
		Presence   string   `json:"presence"`
		Excluded   string   `json:"excluded"`
		Chosen     bool     `json:"chosen"`
	} `json:"mirrors"`
	Decision struct {
		Mirror string `json:"mirror"`
		Reason string `json:"reason"`
		URL    string `json:"url"`
	} `json:"decision"`
}

// checkResolve runs the built binary's resolve on the proxy's configuration.
func (g *geoEnv) checkResolve(t *testing.T) {
	bin := needProxy(t)
	resolve := func(t *testing.T, args ...string) string {
		t.Helper()
		return testenv.Run(t, time.Minute, nil, bin, append([]string{"resolve", "--config", g.proxy.Config}, args...)...)
	}
	l2, l3, l4 := g.app.Layers[2], g.app.Layers[3], g.app.Layers[4]

	// A German client and a blob its nearest mirror lacks: each mirror's rank, distance and
	// presence, and why the scoped one is left out.
	t.Run("text", func(t *testing.T) {
		out := resolve(t, "--ip", placeDE.addr, "--digest", l2)
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^client +89\.160\.20\.112$`),
			regexp.MustCompile(`(?m)^location +country DE, continent EU, at 50\.11,8\.68, AS3320$`),
			regexp.MustCompile(`(?m)^blob +GET ` + l2 + `$`),
			regexp.MustCompile(`(?m)^decision +us-east \(distance\)$`),
			regexp.MustCompile(`(?m)^url +` + regexp.QuoteMeta(g.mirrorURL("us-east", l2)) + `$`),
			regexp.MustCompile(`(?m)^1 +eu-west +country +[0-9] km +100 +[0-9.]+ +absent +not present\n` +
				`2 +us-east +distance +6[0-9]{3} km +100 +[0-9.]+ +present +chosen\n` +
				`3 +asia +distance +10[0-9]{3} km +100 +[0-9.]+ +present +-\n` +
				`- +br-south +- +- +100 +- +- +out of scope: only_countries \[BR\]$`),
		} {
			if !want.MatchString(out) {
				t.Errorf("resolve --ip %s --digest %s: output does not match %s:\n%s", placeDE.addr, l2, want, out)
			}
		}
	})

	for _, tc := range []struct {
		name, ip, digest string
		mirror, reason   string
		known            bool
		country          string
		positions        map[string]int // mirror -> rank, 0 for excluded
		excluded         map[string]string
	}{
		{"nearest-holds-it", placeSG.addr, g.app.Layers[1], "asia", "country", true, "SG",
			map[string]int{"asia": 1, "eu-west": 2, "us-east": 3, "br-south": 0},
			map[string]string{"us-east": "not present", "br-south": "out of scope: only_countries [BR]"}},
		{"scoped-mirror", placeBR.addr, l4, "br-south", "country", true, "BR",
			map[string]int{"br-south": 1, "us-east": 2, "eu-west": 3, "asia": 4},
			map[string]string{"us-east": "not present", "eu-west": "not present", "asia": "not present"}},
		{"unknown-client-no-mirror", placeUnknown.addr, l3, "upstream", reasonNotPresent, false, "",
			map[string]int{"br-south": 0},
			map[string]string{"eu-west": "not present", "us-east": "not present", "asia": "not present",
				"br-south": "out of scope: only_countries [BR]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := resolve(t, "--ip", tc.ip, "--digest", tc.digest, "--json")
			var e resolveJSON
			if err := json.Unmarshal([]byte(out), &e); err != nil {
				t.Fatalf("resolve --json: %v\n%s", err, out)
			}
			if e.Client.Addr != tc.ip || e.Client.Known != tc.known || e.Client.Country != tc.country {
				t.Errorf("client %+v, want %s known=%v country %q", e.Client, tc.ip, tc.known, tc.country)
			}
			wantURL := ""
			if tc.mirror != "upstream" {
				wantURL = g.mirrorURL(tc.mirror, tc.digest)
			}
			if e.Decision.Mirror != tc.mirror || e.Decision.Reason != tc.reason || e.Decision.URL != wantURL {
				t.Errorf("decision %+v, want %s (%s) %s", e.Decision, tc.mirror, tc.reason, wantURL)
			}
			if len(e.Mirrors) != len(geoMirrors) {
				t.Fatalf("%d mirrors explained, want %d:\n%s", len(e.Mirrors), len(geoMirrors), out)
			}
			for _, m := range e.Mirrors {
				if pos, ok := tc.positions[m.Name]; ok && m.Position != pos {
					t.Errorf("mirror %s: position %d, want %d", m.Name, m.Position, pos)
				}
				if ex := tc.excluded[m.Name]; m.Excluded != ex {
					t.Errorf("mirror %s: excluded %q, want %q", m.Name, m.Excluded, ex)
				}
				if m.Chosen != (m.Name == tc.mirror) {
					t.Errorf("mirror %s: chosen %v", m.Name, m.Chosen)
				}
			}
		})
	}
}

// geoMark is where the access logs stood before a pull.
type geoMark struct {
	mirrors map[string]int
	reg     int
}

func (g *geoEnv) mark() geoMark {
	m := geoMark{mirrors: map[string]int{}, reg: len(g.reg.Proc.Output())}
	for n, s := range g.servers {
		m.mirrors[n] = s.Mark()
	}
	return m
}

// checkServed checks, from the access logs since mk, that each blob in fetched was downloaded
// from the mirror pl's client must be sent to (or from the registry when none qualifies), and
// that no mirror served anything else: other mirrors saw at most presence checks (HEAD).
func (g *geoEnv) checkServed(t *testing.T, mk geoMark, pl geoPlace, repo string, fetched []string) {
	t.Helper()
	want := map[string]string{} // mirror key path -> digest; "upstream/"+digest for the registry
	for _, d := range fetched {
		ms, _ := pl.expect(g.holders[d])
		if len(ms) != 1 {
			t.Fatalf("%s: the pulls' places must have one nearest mirror per blob, not %v", d, ms)
		}
		if ms[0] == "upstream" {
			want["upstream/"+d] = d
			continue
		}
		want[ms[0]+g.keyPath(ms[0], d)] = d
	}
	got := map[string]bool{}
	for _, m := range geoMirrors {
		for _, a := range g.servers[m.name].Since(mk.mirrors[m.name]) {
			if a.Method != http.MethodGet {
				continue
			}
			k := m.name + a.Path
			got[k] = true
			if _, ok := want[k]; !ok {
				t.Errorf("mirror %s served GET %s (%s) to the %s client; want each blob from its nearest holder",
					m.name, a.Path, g.roleOfPath(a.Path), pl.name)
			}
		}
	}
	for k, d := range want {
		if strings.HasPrefix(k, "upstream/") {
			g.waitRegistryGET(t, mk.reg, repo, d, pl)
			continue
		}
		if !got[k] {
			m, _, _ := strings.Cut(k, "/")
			t.Errorf("blob %s (%s) was not fetched from %s, its nearest holder for the %s client", d, g.role[d], m, pl.name)
		}
	}
}

func (g *geoEnv) roleOfPath(p string) string {
	for d, r := range g.role {
		if strings.HasSuffix(p, "/"+strings.Replace(d, ":", "/", 1)) {
			return r
		}
	}
	return "not a test blob"
}

// waitRegistryGET waits briefly for the registry's access log to show the blob's download: the
// log line may follow the end of the response by a moment.
func (g *geoEnv) waitRegistryGET(t *testing.T, from int, repo, d string, pl geoPlace) {
	t.Helper()
	line := fmt.Sprintf("\"GET /v2/%s/%s/blobs/%s HTTP/1.1\" 20", upstreamPrefix, repo, d)
	deadline := time.Now().Add(3 * time.Second)
	for {
		if strings.Contains(g.reg.Proc.Output()[from:], line) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("blob %s (%s) on no mirror of the %s client was not downloaded from the registry", d, g.role[d], pl.name)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGeoPulls pulls through fronts on three continents with every client and checks, from the
// mirrors' and the registry's access logs, that each blob came from the nearest mirror holding it.
func TestGeoPulls(t *testing.T) {
	g := startGeo(t, true)
	amd := g.multi.Child(t, "linux/"+runtime.GOARCH)
	for _, tc := range []struct {
		client string
		front  string
		repo   string
	}{
		{"docker", "DE", "app"},
		{"docker", "SG", "multi"},
		{"podman", "US", "app"},
		{"podman", "DE", "multi"},
		{"skopeo", "SG", "app"},
		{"skopeo", "US", "multi"},
		{"crane", "US", "app"},
		{"crane", "SG", "multi"},
	} {
		t.Run(tc.client+"-"+tc.repo+"-"+tc.front, func(t *testing.T) {
			want := g.app
			if tc.repo == "multi" {
				want = g.multi
			}
			fetched := want.Blobs()
			if tc.repo == "multi" && (tc.client == "docker" || tc.client == "podman") {
				fetched = amd.Blobs() // the daemon's own platform only
			}
			ref := g.fronts[tc.front].Ref(tc.repo + ":1.0")
			pl := geoFrontPlaces[tc.front]
			mk := g.mark()
			switch tc.client {
			case "docker":
				d := testenv.StartDockerd(t)
				d.Rmi(t, ref)
				t.Cleanup(func() { d.Rmi(t, ref) })
				if p := d.Pull(t, ref); p.Digest != want.Digest {
					t.Errorf("docker pull %s: digest %s, want %s", ref, p.Digest, want.Digest)
				}
			case "podman":
				if p := testenv.NewPodman(t).Pull(t, ref); p.Digest != want.Digest {
					t.Errorf("podman pull %s: digest %s, want %s", ref, p.Digest, want.Digest)
				}
			case "skopeo":
				p := testenv.NewSkopeo(t).Copy(t, ref)
				checkSkopeoCopy(t, ref, p, want)
				checkBlobs(t, p, want)
			case "crane":
				ref = g.namedFronts[tc.front].Ref(tc.repo + ":1.0")
				p := testenv.NewCrane(t).Pull(t, ref)
				if p.Digest != want.Digest {
					t.Errorf("crane pull %s: digest %s, want %s", ref, p.Digest, want.Digest)
				}
				checkBlobs(t, p, want)
			}
			g.checkServed(t, mk, pl, tc.repo, fetched)
		})
	}
}
