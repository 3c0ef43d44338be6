package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// The world of TestWorld: clients on six continents, six bucket mirrors on five of them (three
// filled by plain sync, three by demand), a registry and two replicas of the proxy, behind a
// load balancer per place that sends each request to the replicas in turn. Every byte of a blob that a
// client fetches passes a counting front (one before versitygw, one before fake-gcs-server, one
// before the registry), which records which mirror's bucket (or the upstream) sent it and to
// which client; clients are told apart by the loopback address their connections leave from.
// The places and mirrors are laid out so that the proxy's ranking (country, continent, then
// distance) and plain great-circle distance agree: "nearest" below is by distance.

// worldPlace is a client of the world: where the GeoIP database of the world puts its address,
// the front (a trusted load balancer) that tells the proxy that address, and the loopback
// address its own connections leave from.
type worldPlace struct {
	name      string // its country
	continent string
	lat, lon  float64
	addr      string // the client address its front writes into X-Forwarded-For
	front     string // the front's loopback address, trusted by the proxy
	source    string // where the client's connections come from
}

// The addresses are in 100.64.0.0/10 (shared address space), which no GeoIP database places
// anywhere real.
var worldPlaces = []worldPlace{
	{"DE", "EU", 50.11, 8.68, "100.64.1.10", "127.0.0.41", "127.0.0.51"},    // Frankfurt
	{"US", "NA", 38.90, -77.40, "100.64.2.10", "127.0.0.42", "127.0.0.52"},  // Ashburn
	{"JP", "AS", 35.68, 139.69, "100.64.3.10", "127.0.0.43", "127.0.0.53"},  // Tokyo
	{"SG", "AS", 1.35, 103.82, "100.64.4.10", "127.0.0.44", "127.0.0.54"},   // Singapore
	{"BR", "SA", -23.55, -46.63, "100.64.5.10", "127.0.0.45", "127.0.0.55"}, // São Paulo
	{"AU", "OC", -33.87, 151.21, "100.64.6.10", "127.0.0.46", "127.0.0.56"}, // Sydney
	{"ZA", "AF", -26.20, 28.05, "100.64.7.10", "127.0.0.47", "127.0.0.57"},  // Johannesburg
}

// worldMirror is a mirror of the world: a bucket of its own (named like the mirror) in
// versitygw (s3) or fake-gcs-server (gcs).
type worldMirror struct {
	name     string
	provider string // s3 | gcs
	country  string
	lat, lon float64
	demand   bool // sync: demand
}

var worldMirrors = []worldMirror{
	{"us-east", "s3", "US", 38.9, -77.4, false},
	{"eu-west", "gcs", "DE", 50.1, 8.7, false},
	{"ap-northeast", "s3", "JP", 35.7, 139.7, false},
	{"sa-east", "gcs", "BR", -23.5, -46.6, true},
	{"af-south", "s3", "ZA", -33.9, 18.4, true},
	{"au-southeast", "gcs", "AU", -33.9, 151.2, true},
}

const worldPrefix = "blobs/"

// km is the great-circle distance between two points (haversine, mean Earth radius), the
// measure the proxy ranks by after country and continent.
func km(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Sqrt(a))
}

// nearest returns the mirror of names nearest to p; "" when names is empty.
func (p worldPlace) nearest(names []string) string {
	best, bestKm := "", math.Inf(1)
	for _, m := range worldMirrors {
		for _, n := range names {
			if n != m.name {
				continue
			}
			if d := km(p.lat, p.lon, m.lat, m.lon); d < bestKm {
				best, bestKm = m.name, d
			}
		}
	}
	return best
}

// home is the mirror nearest to p of all the world's: where its blobs should come from once
// the world is filled.
func (p worldPlace) home() string {
	var all []string
	for _, m := range worldMirrors {
		all = append(all, m.name)
	}
	return p.nearest(all)
}

// worldGeoIP writes a GeoIP2-City database placing every client of the world, with mmdbwriter
// as testdata/geoip/gen does for the committed one (which has no African record).
func worldGeoIP(t *testing.T) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            "GeoIP2-City",
		RecordSize:              24,
		IncludeReservedNetworks: true, // 100.64.0.0/10 is reserved
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range worldPlaces {
		_, network, err := net.ParseCIDR(p.addr + "/24")
		if err != nil {
			t.Fatal(err)
		}
		country := mmdbtype.Map{"iso_code": mmdbtype.String(p.name)}
		if err := tree.Insert(network, mmdbtype.Map{
			"continent":          mmdbtype.Map{"code": mmdbtype.String(p.continent)},
			"country":            country,
			"registered_country": country,
			"location": mmdbtype.Map{
				"latitude":        mmdbtype.Float64(p.lat),
				"longitude":       mmdbtype.Float64(p.lon),
				"accuracy_radius": mmdbtype.Uint16(50),
			},
		}); err != nil {
			t.Fatalf("GeoIP record %s: %v", network, err)
		}
	}
	path := filepath.Join(t.TempDir(), "world-city.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// blobFetch is one blob body a counting front passed on.
type blobFetch struct {
	from   string // the mirror, or "upstream"
	client string // the client's place; "" for anyone else (sync, the proxy)
	digest string
	bytes  int64
}

// byteCounter records the blob bodies passed by the world's counting fronts. A body is
// entered before its first byte is sent and its bytes are counted as they are read from the
// server, before they are passed on: whatever a client has received is counted.
type byteCounter struct {
	clients map[string]string // source address -> place name

	mu      sync.Mutex
	fetches []*countingBody
}

func (c *byteCounter) add(b *countingBody) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fetches = append(c.fetches, b)
}

// mark is the position of the next fetch, for since.
func (c *byteCounter) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fetches)
}

// since returns the fetches entered after mark, with the bytes passed so far.
func (c *byteCounter) since(mark int) []blobFetch {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]blobFetch, 0, len(c.fetches)-mark)
	for _, b := range c.fetches[mark:] {
		f := b.fetch
		f.bytes = b.n.Load()
		out = append(out, f)
	}
	return out
}

var (
	// A path-style object URL of a blob: /<bucket>/blobs/sha256/<hex>.
	bucketBlobPath = regexp.MustCompile(`^/([a-z0-9-]+)/` + worldPrefix + `sha256/([0-9a-f]{64})$`)
	// A registry blob URL: /v2/<name>/blobs/sha256:<hex>.
	registryBlobPath = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)
)

// bucketBlob names the mirror and digest of an object URL path in one of buckets.
func bucketBlob(buckets map[string]bool) func(string) (string, string, bool) {
	return func(path string) (string, string, bool) {
		m := bucketBlobPath.FindStringSubmatch(path)
		if m == nil || !buckets[m[1]] {
			return "", "", false
		}
		return m[1], "sha256:" + m[2], true
	}
}

func registryBlob(path string) (string, string, bool) {
	m := registryBlobPath.FindStringSubmatch(path)
	if m == nil {
		return "", "", false
	}
	return upstreamMirror, m[1], true
}

const upstreamMirror = "upstream"

type peerKey struct{}

// front starts a counting reverse proxy to target on 127.0.0.1 and returns it as
// "localhost:PORT" (go-containerregistry clients follow redirects to host names only, see
// checkAllClients). keepHost passes the client's Host on, so that an S3 signature over it still
// holds; otherwise the target's own host is sent (fake-gcs-server serves object paths only for
// its public host). Every 200 answer to a GET whose path blob names is counted as it is read.
func (c *byteCounter) front(t *testing.T, target string, keepHost bool, blob func(path string) (from, digest string, ok bool)) string {
	t.Helper()
	tu, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(tu)
			if keepHost {
				r.Out.Host = r.In.Host
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method != http.MethodGet || resp.StatusCode != http.StatusOK {
				return nil
			}
			from, digest, ok := blob(resp.Request.URL.Path)
			if !ok {
				return nil
			}
			peer, _ := resp.Request.Context().Value(peerKey{}).(string)
			host, _, _ := net.SplitHostPort(peer)
			b := &countingBody{ReadCloser: resp.Body, fetch: blobFetch{from: from, client: c.clients[host], digest: digest}}
			c.add(b)
			resp.Body = b
			return nil
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, r.RemoteAddr)))
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return "localhost:" + port
}

// countingBody counts what is read through it.
type countingBody struct {
	io.ReadCloser
	fetch blobFetch
	n     atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// worldImage is an image of the world's registry and the sizes of its blobs.
type worldImage struct {
	repo  string // as clients name it
	tag   string
	blobs map[string]int64 // digest -> size: the config and every layer
}

// pushWorldImage pushes a random image of layers layers of about size bytes to repo:1.0.
func pushWorldImage(t *testing.T, reg *testenv.Registry, repo string, layers int, size int64) worldImage {
	t.Helper()
	img := testenv.OCIImage(t, layers, size, "linux/amd64")
	reg.Push(t, upstreamPrefix+"/"+repo+":1.0", img)
	im := worldImage{repo: repo, tag: "1.0", blobs: map[string]int64{}}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	im.blobs[cfg.String()] = int64(len(raw))
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		n, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		im.blobs[d.String()] = n
	}
	return im
}

// bytes is the size of all the image's blobs: what one pull fetches.
func (im worldImage) bytes() int64 {
	var n int64
	for _, s := range im.blobs {
		n += s
	}
	return n
}

// world is everything TestWorld runs against.
type world struct {
	reg      *testenv.Registry
	s3       *testenv.S3Server
	gcs      *testenv.GCSServer
	counter  *byteCounter
	config   string                     // sync's configuration file (the first replica's)
	replicas []*testenv.Proxy           // the proxy's replicas, behind every place's balancer
	admins   []string                   // their admin listeners, http://HOST:PORT
	fronts   map[string]string          // place -> its balancer, HOST:PORT
	clients  map[string]*http.Transport // place -> its connections
	images   map[string]worldImage      // repo -> image
}

// worldReplicas is how many replicas of the proxy serve the world.
const worldReplicas = 2

// worldImageSpec is an image to push: layers of about size bytes each.
type worldImageSpec struct {
	repo   string
	layers int
	size   int64
}

// startWorld starts the servers, pushes images, writes the configuration and starts the
// proxy's replicas behind one balancer per place. The buckets are empty.
func startWorld(t *testing.T, specs []worldImageSpec) *world {
	t.Helper()
	isolateClouds(t)
	w := &world{
		counter: &byteCounter{clients: map[string]string{}},
		fronts:  map[string]string{},
		clients: map[string]*http.Transport{},
		images:  map[string]worldImage{},
	}
	w.s3 = testenv.StartVersityGW(t, t.TempDir())
	w.gcs = testenv.StartFakeGCS(t)
	s3Buckets, gcsBuckets := map[string]bool{}, map[string]bool{}
	for _, m := range worldMirrors {
		if m.provider == "s3" {
			w.s3.CreateBucket(t, m.name)
			s3Buckets[m.name] = true
		} else {
			w.gcs.CreateBucket(t, m.name)
			gcsBuckets[m.name] = true
		}
	}
	w.reg = testenv.StartRegistry(t, testenv.RegistryOptions{})
	for _, sp := range specs {
		w.images[sp.repo] = pushWorldImage(t, w.reg, sp.repo, sp.layers, sp.size)
	}
	for _, p := range worldPlaces {
		w.counter.clients[p.source] = p.name
	}
	s3Front := w.counter.front(t, w.s3.Endpoint, true, bucketBlob(s3Buckets))
	gcsFront := w.counter.front(t, w.gcs.URL, false, bucketBlob(gcsBuckets))
	upFront := w.counter.front(t, w.reg.URL, true, registryBlob)
	// The GCS client finds the emulator only through the environment, which the proxy and
	// sync inherit.
	t.Setenv("STORAGE_EMULATOR_HOST", gcsFront)
	sa, _ := testenv.ServiceAccountKey(t)
	s3Creds := w.s3.CredentialsFile(t, "default")

	var b strings.Builder
	fmt.Fprintf(&b, "upstream: http://%s/v2/%s/\n", upFront, upstreamPrefix)
	b.WriteString("trusted_proxies:\n")
	for _, p := range worldPlaces {
		fmt.Fprintf(&b, "  - %s/32\n", p.front)
	}
	fmt.Fprintf(&b, "geoip:\n  database: %s\n", worldGeoIP(t))
	b.WriteString("mirrors:\n")
	for _, m := range worldMirrors {
		fmt.Fprintf(&b, "  - name: %s\n    provider: %s\n    bucket: %s\n    prefix: %s\n", m.name, m.provider, m.name, worldPrefix)
		if m.provider == "s3" {
			fmt.Fprintf(&b, "    endpoint: http://%s\n    region: %s\n    credentials_file: %s\n", s3Front, w.s3.Region, s3Creds)
		} else {
			fmt.Fprintf(&b, "    credentials_file: %s\n", sa)
		}
		fmt.Fprintf(&b, "    country: %s\n    location: {lat: %g, lon: %g}\n", m.country, m.lat, m.lon)
		if m.demand {
			b.WriteString("    sync: demand\n")
		}
	}
	// A copy made by sync is used a second later rather than after the default 30 s; a loaded
	// test machine must not turn a slow presence check into a fallback.
	b.WriteString("presence:\n  miss_ttl: 1s\n  timeout: 5s\n")
	syncSection := "sync:\n  repositories:\n"
	for _, sp := range specs {
		syncSection += fmt.Sprintf("    - name: %s\n", sp.repo)
	}
	var urls []string
	for range worldReplicas {
		admin := testenv.Addr(t, "127.0.0.1")
		cfg := b.String() + fmt.Sprintf("admin:\n  enabled: true\n  listen: %s\n", admin) + syncSection
		r := testenv.StartProxy(t, needProxy(t), cfg)
		w.replicas = append(w.replicas, r)
		w.admins = append(w.admins, "http://"+admin)
		urls = append(urls, r.URL)
	}
	// Stop the replicas together rather than one after the other.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, r := range w.replicas {
			wg.Go(r.Proc.Stop)
		}
		wg.Wait()
	})
	w.config = w.replicas[0].Config
	for _, p := range worldPlaces {
		w.fronts[p.name] = startBalancer(t, p.front, p.addr, urls)
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(p.source)}}
		tr := &http.Transport{DialContext: d.DialContext, ResponseHeaderTimeout: time.Minute, MaxIdleConnsPerHost: 8}
		t.Cleanup(tr.CloseIdleConnections)
		w.clients[p.name] = tr
	}
	return w
}

// startBalancer starts a load balancer on host (a loopback address) in front of the replicas:
// it sends the requests it receives to each replica in turn, with X-Forwarded-For set to
// client (replacing what the request carried), from host, so that the replicas see it as
// the peer, a trusted proxy. It returns its HOST:PORT.
func startBalancer(t *testing.T, host, client string, replicas []string) string {
	t.Helper()
	var targets []*url.URL
	for _, r := range replicas {
		u, err := url.Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, u)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("balancer on %s: %v", host, err)
	}
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(host)}}
	tr := &http.Transport{DialContext: d.DialContext, ResponseHeaderTimeout: time.Minute, MaxIdleConnsPerHost: 8}
	var next atomic.Uint64
	srv := &httptest.Server{
		Listener: ln,
		Config: &http.Server{Handler: &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(targets[(next.Add(1)-1)%uint64(len(targets))])
				r.Out.Header.Set("X-Forwarded-For", client)
			},
			Transport: tr,
		}, ReadHeaderTimeout: 10 * time.Second},
	}
	srv.Start()
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
	return ln.Addr().String()
}

// pull pulls repo:1.0 as the client at place with the go-containerregistry library, as crane
// does: the manifest, then the config and every layer, each read to its end and checked
// against its digest.
func (w *world) pull(ctx context.Context, place, repo string) error {
	ref, err := name.ParseReference(w.fronts[place]+"/"+repo+":"+w.images[repo].tag, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithTransport(w.clients[place]))
	if err != nil {
		return fmt.Errorf("%s pulls %s: %w", place, ref, err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("%s pulls %s: config: %w", place, ref, err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	if got := testenv.SHA256Digest(cfg); got != cfgName.String() {
		return fmt.Errorf("%s pulls %s: config hashes to %s, want %s", place, ref, got, cfgName)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		if err := readLayer(l); err != nil {
			return fmt.Errorf("%s pulls %s: %w", place, ref, err)
		}
	}
	return nil
}

func readLayer(l v1.Layer) error {
	want, err := l.Digest()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("layer %s: %w", want, err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return fmt.Errorf("layer %s: %w", want, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want.String() {
		return fmt.Errorf("layer %s: content hashes to %s", want, got)
	}
	return nil
}

// holdings lists which blobs each mirror's bucket holds now (mirror -> digests).
func (w *world) holdings(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	for _, m := range worldMirrors {
		keys := map[string]bool{}
		if m.provider == "s3" {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			p := s3.NewListObjectsV2Paginator(w.s3.Client(), &s3.ListObjectsV2Input{Bucket: &m.name, Prefix: new(worldPrefix + "sha256/")})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					cancel()
					t.Fatalf("list bucket %s: %v", m.name, err)
				}
				for _, o := range page.Contents {
					keys[*o.Key] = true
				}
			}
			cancel()
		} else {
			a := do(t, http.MethodGet, w.gcs.URL+"/storage/v1/b/"+m.name+"/o?maxResults=1000&prefix="+url.QueryEscape(worldPrefix+"sha256/"), nil)
			if a.Status != http.StatusOK {
				t.Fatalf("list bucket %s: status %d: %s", m.name, a.Status, a.Body)
			}
			var list struct {
				Items []struct {
					Name string `json:"name"`
				} `json:"items"`
				Next string `json:"nextPageToken"`
			}
			if err := json.Unmarshal(a.Body, &list); err != nil || list.Next != "" {
				t.Fatalf("list bucket %s: %v (next page %q): %s", m.name, err, list.Next, a.Body)
			}
			for _, o := range list.Items {
				keys[o.Name] = true
			}
		}
		ds := map[string]bool{}
		for k := range keys {
			ds["sha256:"+strings.TrimPrefix(k, worldPrefix+"sha256/")] = true
		}
		out[m.name] = ds
	}
	return out
}
