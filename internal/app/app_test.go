package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/geo"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/redirector"
)

const (
	blobA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	blobB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// blobServer is a static mirror holding some blobs, counting the HEADs it answers.
type blobServer struct {
	*httptest.Server
	mu    sync.Mutex
	heads int
}

func newBlobServer(t testing.TB, prefix string, digests ...string) *blobServer {
	t.Helper()
	have := map[string]bool{}
	for _, d := range digests {
		have["/"+prefix+strings.Replace(d, ":", "/", 1)] = true
	}
	b := &blobServer{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			b.mu.Lock()
			b.heads++
			b.mu.Unlock()
		}
		if !have[r.URL.Path] {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", "3")
		_, _ = w.Write([]byte("abc"))
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *blobServer) headCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.heads
}

func geoDir(t testing.TB) string {
	d, err := filepath.Abs("../../testdata/geoip")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// loadYAML writes yaml to a file and loads it as the configuration.
func loadYAML(t testing.TB, yaml string) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// testService is the service of testConfig, closed when the test ends.
func testService(t testing.TB, eu, us *blobServer, info BuildInfo) *Service {
	t.Helper()
	svc, err := New(context.Background(), testConfig(t, eu, us), info, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

// forwardedRequest is a GET of target from 89.160.20.112 (in Germany for the test database), through
// testConfig's trusted proxy.
func forwardedRequest(target string) *http.Request {
	req := httptest.NewRequest("GET", target, nil)
	req.RemoteAddr = "192.0.2.1:5000"
	req.Header.Set("X-Forwarded-For", "89.160.20.112")
	return req
}

func testConfig(t testing.TB, eu, us *blobServer) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf(`
upstream: http://127.0.0.2:5000/v2/acme/images/
trusted_proxies: ["192.0.2.0/24"]
geoip:
  database: %[3]s/city.mmdb
  asn_database: %[3]s/asn.mmdb
admin: {enabled: true}
mirrors:
  - name: eu-west
    provider: http
    base_url: %[1]s/eu/
    prefix: blobs/
    country: DE
    location: {lat: 50.1, lon: 8.7}
  - name: us-east
    provider: http
    base_url: %[2]s/
    country: US
    location: {lat: 38.9, lon: -77.4}
    networks: ["10.20.0.0/16"]
`, eu.URL, us.URL, geoDir(t))
	return loadYAML(t, yaml)
}

// TestBlobRouting runs requests through the whole service as built from a config file: trusted
// front, GeoIP test database, network rules and two http mirrors holding different blobs.
func TestBlobRouting(t *testing.T) {
	eu := newBlobServer(t, "eu/blobs/", blobA)
	us := newBlobServer(t, "", blobA, blobB)
	svc := testService(t, eu, us, BuildInfo{Version: "test"})
	up := "http://127.0.0.2:5000/v2/acme/images/app/blobs/"
	for _, tc := range []struct {
		name, remote, xff, digest string
		location, mirror, reason  string
	}{
		{"germany to eu", "192.0.2.1:5000", "89.160.20.112", blobA, eu.URL + "/eu/blobs/sha256/" + strings.Repeat("a", 64), "eu-west", "country"},
		{"britain to eu by continent", "192.0.2.1:5000", "81.2.69.142", blobA, eu.URL + "/eu/blobs/sha256/" + strings.Repeat("a", 64), "eu-west", "continent"},
		{"us to us", "192.0.2.1:5000", "216.160.83.56", blobA, us.URL + "/sha256/" + strings.Repeat("a", 64), "us-east", "country"},
		{"germany, blob only in us", "192.0.2.1:5000", "89.160.20.112", blobB, us.URL + "/sha256/" + strings.Repeat("b", 64), "us-east", "distance"},
		{"network rule beats geo", "192.0.2.1:5000", "10.20.3.4", blobA, us.URL + "/sha256/" + strings.Repeat("a", 64), "us-east", "network"},
		{"spoofed header from untrusted client", "216.160.83.56:5000", "89.160.20.112", blobA, us.URL + "/sha256/" + strings.Repeat("a", 64), "us-east", "country"},
		{"blob nowhere", "192.0.2.1:5000", "89.160.20.112", "sha256:" + strings.Repeat("c", 64), up + "sha256:" + strings.Repeat("c", 64), "upstream", "fallback:not-present"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/v2/app/blobs/"+tc.digest, nil)
			req.RemoteAddr = tc.remote
			req.Header.Set("X-Forwarded-For", tc.xff)
			rec := httptest.NewRecorder()
			svc.Handler().ServeHTTP(rec, req)
			if rec.Code != 307 || rec.Header().Get("Location") != tc.location || rec.Header().Get("X-Mirror") != tc.mirror || rec.Header().Get("X-Mirror-Reason") != tc.reason {
				t.Errorf("got %d Location=%q X-Mirror=%q X-Mirror-Reason=%q\nwant 307 Location=%q X-Mirror=%q X-Mirror-Reason=%q",
					rec.Code, rec.Header().Get("Location"), rec.Header().Get("X-Mirror"), rec.Header().Get("X-Mirror-Reason"), tc.location, tc.mirror, tc.reason)
			}
		})
	}

	// A warm blob costs no presence check.
	before := eu.headCount()
	for range 10 {
		req := httptest.NewRequest("GET", "/v2/app/blobs/"+blobA, nil)
		req.RemoteAddr = "89.160.20.112:1"
		svc.Handler().ServeHTTP(httptest.NewRecorder(), req)
	}
	if got := eu.headCount(); got != before {
		t.Errorf("warm requests made %d presence checks", got-before)
	}
}

func TestAdminResolve(t *testing.T) {
	eu := newBlobServer(t, "eu/blobs/", blobA)
	us := newBlobServer(t, "", blobA)
	svc := testService(t, eu, us, BuildInfo{})
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/_/resolve?ip=89.160.20.112&digest="+blobA, nil))
	var e struct {
		Client   struct{ Country string }
		Decision struct{ Mirror, Reason string }
		Mirrors  []struct{ Name string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}
	if e.Client.Country != "DE" || e.Decision.Mirror != "eu-west" || len(e.Mirrors) != 2 {
		t.Errorf("explanation = %+v", e)
	}
	rec = httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/_/resolve?ip=nope", nil))
	if rec.Code != 400 {
		t.Errorf("bad ip: status %d", rec.Code)
	}
}

// BenchmarkBlobRedirectWarm is a full blob redirect through the service: client address behind a
// trusted proxy, GeoIP lookup, ranking, cached presence and URL.
func BenchmarkBlobRedirectWarm(b *testing.B) {
	eu := newBlobServer(b, "eu/blobs/", blobA)
	us := newBlobServer(b, "", blobA)
	svc := testService(b, eu, us, BuildInfo{})
	req := forwardedRequest("/v2/app/blobs/" + blobA)
	w := &nullWriter{h: http.Header{}}
	svc.Handler().ServeHTTP(w, req)
	if w.h.Get("X-Mirror") != "eu-west" {
		b.Fatalf("warm-up went to %q", w.h.Get("X-Mirror"))
	}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		svc.Handler().ServeHTTP(w, req)
	}
}

// BenchmarkBlobRedirectWarmParallel is BenchmarkBlobRedirectWarm on every core at once, each
// goroutine with its own request and writer, so that contention in the caches, the selector's
// state and the metrics shows, which a single goroutine hides.
func BenchmarkBlobRedirectWarmParallel(b *testing.B) {
	eu := newBlobServer(b, "eu/blobs/", blobA)
	us := newBlobServer(b, "", blobA)
	svc := testService(b, eu, us, BuildInfo{})
	newRequest := func() *http.Request {
		req := forwardedRequest("/v2/app/blobs/" + blobA)
		return req
	}
	w := &nullWriter{h: http.Header{}}
	svc.Handler().ServeHTTP(w, newRequest())
	if w.h.Get("X-Mirror") != "eu-west" {
		b.Fatalf("warm-up went to %q", w.h.Get("X-Mirror"))
	}
	h := svc.Handler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req, w := newRequest(), &nullWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			h.ServeHTTP(w, req)
		}
	})
}

type nullWriter struct{ h http.Header }

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nullWriter) WriteHeader(int)             {}

// signingBackend holds every blob and signs like S3.
type signingBackend struct{}

func (signingBackend) Stat(context.Context, string) (mirrors.Object, error) {
	return mirrors.Object{Exists: true, Size: 3}, nil
}

func (signingBackend) URL(_ context.Context, _, key string, ttl time.Duration) (*url.URL, time.Time, error) {
	u, err := url.Parse("https://bucket.example/" + key + "?X-Amz-Credential=AKIDSECRET%2F20260101&X-Amz-Signature=deadbeef")
	return u, time.Now().Add(ttl), err
}

// TestDebugLogRedactsSignatures checks that the debug log of a blob decision never carries a
// signature, while the client gets the whole URL.
func TestDebugLogRedactsSignatures(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := mirrors.NewMirror(mirrors.Spec{Name: "s3", Provider: "s3", Prefix: "blobs/", Weight: 100, SigningTTL: time.Minute}, signingBackend{})
	r := blobRouter{loc: geo.NewLocator(nil, nil), sel: mirrors.NewSelector([]*mirrors.Mirror{m}, mirrors.Options{}), log: log}
	d, _ := oci.ParseDigest(blobA)
	got := r.RouteBlob(t.Context(), redirector.BlobQuery{Client: netip.MustParseAddr("192.0.2.7"), Name: "app", Digest: d, Method: "GET"})
	if !strings.Contains(got.URL, "X-Amz-Signature=deadbeef") {
		t.Fatalf("client URL = %q, want the signed URL", got.URL)
	}
	if strings.Contains(logs.String(), "deadbeef") || strings.Contains(logs.String(), "AKIDSECRET") || !strings.Contains(logs.String(), "bucket.example/blobs/sha256/") {
		t.Errorf("debug log = %q", logs.String())
	}
}

// TestCloudRegions checks that published cloud ranges send a client in a cloud region to the
// mirror that claims it, whatever GeoIP says (the test addresses have no GeoIP record).
func TestCloudRegions(t *testing.T) {
	eu := newBlobServer(t, "", blobA)
	us := newBlobServer(t, "", blobA)
	cloud, err := filepath.Abs("../../testdata/cloud")
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`
upstream: http://127.0.0.2:5000/v2/acme/
geoip: {database: %[1]s/city.mmdb}
cloud_ranges:
  - {cloud: aws, file: %[2]s/aws-ip-ranges.json}
  - {cloud: gcp, file: %[2]s/gcp-cloud.json}
mirrors:
  - {name: eu-west, provider: http, base_url: %[3]s, country: DE, cloud_regions: ["aws:eu-central-1", "gcp:europe-west3"]}
  - {name: us-east, provider: http, base_url: %[4]s, country: US, cloud_regions: ["aws:us-east-1", "gcp:us-east1"]}
`, geoDir(t), cloud, eu.URL, us.URL)
	cfg := loadYAML(t, yaml)
	svc, err := New(context.Background(), cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for _, tc := range []struct{ client, mirror, reason string }{
		{"3.80.1.2", "us-east", "network"},      // aws:us-east-1
		{"3.5.137.1", "eu-west", "network"},     // aws:eu-central-1
		{"35.234.70.1", "eu-west", "network"},   // gcp:europe-west3
		{"34.23.9.9", "us-east", "network"},     // gcp:us-east1
		{"89.160.20.112", "eu-west", "country"}, // GeoIP only
	} {
		req := httptest.NewRequest("GET", "/v2/app/blobs/"+blobA, nil)
		req.RemoteAddr = tc.client + ":1234"
		rec := httptest.NewRecorder()
		svc.Handler().ServeHTTP(rec, req)
		if m, r := rec.Header().Get("X-Mirror"), rec.Header().Get("X-Mirror-Reason"); m != tc.mirror || r != tc.reason {
			t.Errorf("%s: %s (%s), want %s (%s)", tc.client, m, r, tc.mirror, tc.reason)
		}
	}
}

// /readyz answers from the running generation: ready while its GeoIP databases are open.
func TestReadyzFollowsTheGeoIPDatabases(t *testing.T) {
	cfg := testConfig(t, newBlobServer(t, "blobs/"), newBlobServer(t, ""))
	svc, err := New(t.Context(), cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	status := func() int {
		rec := httptest.NewRecorder()
		svc.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		return rec.Code
	}
	if got := status(); got != http.StatusOK {
		t.Fatalf("/readyz = %d with the databases open", got)
	}
	if err := svc.cur.Load().parts.GeoIP.Close(); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d with the databases closed, want 503", got)
	}
}
