package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/demand"
	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/redirector"
)

// demandConfig is testConfig with app as the one configured repository.
func demandConfig(t testing.TB, eu, us *blobServer) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf(`
upstream: http://127.0.0.2:5000/v2/acme/images/
trusted_proxies: ["192.0.2.0/24"]
geoip: {database: %[3]s/city.mmdb}
admin: {enabled: true}
mirrors:
  - {name: eu-west, provider: http, base_url: %[1]s/, country: DE, location: {lat: 50.1, lon: 8.7}}
  - {name: us-east, provider: http, base_url: %[2]s/, country: US, location: {lat: 38.9, lon: -77.4}}
sync:
  repositories:
    - name: app
`, eu.URL, us.URL, geoDir(t))
	return loadYAML(t, yaml)
}

// TestDemandMetrics: a blob the first-ranked mirror lacks counts a miss there, by configured
// repository or "other"; requests count by continent and serving mirror; distances go in the
// histogram; /_/demand lists the missed digests. No unconfigured repository, digest or address
// becomes a label.
func TestDemandMetrics(t *testing.T) {
	eu := newBlobServer(t, "", blobA)
	us := newBlobServer(t, "", blobA, blobB)
	svc, err := New(context.Background(), demandConfig(t, eu, us), BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	get := func(target, xff string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", target, nil)
		req.RemoteAddr = "192.0.2.1:1"
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		rec := httptest.NewRecorder()
		svc.Handler().ServeHTTP(rec, req)
		return rec
	}
	const se = "89.160.20.112" // in Europe in the GeoIP test database: eu-west ranks first
	get("/v2/app/blobs/"+blobA, se)
	for range 3 {
		get("/v2/app/blobs/"+blobB, se)
	}
	get("/v2/secret-repo/blobs/"+blobB, se)
	get("/v2/app/blobs/"+blobA, "") // the trusted proxy itself: not located

	text := get("/metrics", "").Body.String()
	for _, want := range []string{
		`oci_proxy_demand_misses_total{mirror="eu-west",repository="app"} 3`,
		`oci_proxy_demand_misses_total{mirror="eu-west",repository="other"} 1`,
		`oci_proxy_demand_misses_total{mirror="us-east",repository="app"} 0`,
		`oci_proxy_blob_requests_total{continent="EU",mirror="eu-west"} 1`,
		`oci_proxy_blob_requests_total{continent="EU",mirror="us-east"} 4`,
		`oci_proxy_blob_requests_total{continent="unknown",mirror="eu-west"} 1`,
		`oci_proxy_blob_requests_total{continent="AS",mirror="upstream"} 0`,
		`oci_proxy_blob_distance_km_count{continent="EU"} 5`,
		`oci_proxy_blob_distance_km_bucket{continent="EU",le="1000"} 1`,
		`oci_proxy_blob_distance_km_bucket{continent="EU",le="8000"} 5`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	testenv.CheckMetricLabels(t, text, []string{"app", "other"}, nil)
	if got := svc.demand.MirrorMisses(); got["eu-west"] != 4 || got["us-east"] != 0 {
		t.Errorf("MirrorMisses = %v; want eu-west 4", got)
	}

	rec := get("/_/demand", "")
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	d, err := demand.ParseSnapshot(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Misses) != 2 || d.Misses[0] != (demand.Miss{Mirror: "eu-west", Repository: "app", Digest: blobB, Count: d.Misses[0].Count}) ||
		d.Misses[0].Count < 2.99 || d.Misses[1].Repository != demand.Other {
		t.Errorf("misses = %+v", d.Misses)
	}
	if d.HalfLifeSeconds != demand.DefaultHalfLife.Seconds() || len(d.Served) != 3 || len(d.Distance) != 1 {
		t.Errorf("snapshot = %+v", d)
	}
	post := httptest.NewRecorder()
	svc.Handler().ServeHTTP(post, httptest.NewRequest("POST", "/_/demand", nil))
	if post.Code != http.StatusMethodNotAllowed || post.Header().Get("Allow") != "GET" {
		t.Errorf("POST /_/demand: %d, Allow %q", post.Code, post.Header().Get("Allow"))
	}
	if rec := get("/_/demand?top=x", ""); rec.Code != 400 {
		t.Errorf("top=x: %d", rec.Code)
	}
	if rec := get("/_/demand?top=1", ""); !strings.Contains(rec.Body.String(), blobB) || strings.Count(rec.Body.String(), `"digest"`) != 1 {
		t.Errorf("top=1: %s", rec.Body.String())
	}
}

// BenchmarkDemandRecord is what demand counting adds to a blob request, against the existing
// Observe of the same request in the same run: a request served by its first-ranked mirror
// (the common case) and one whose first-ranked mirror missed.
func BenchmarkDemandRecord(b *testing.B) {
	m := NewMetrics(BuildInfo{})
	v := newDemandVecs(prometheus.NewRegistry())
	var ms []*mirrors.Mirror
	for _, n := range []string{"us-east", "us-west", "eu-west", "eu-north", "asia", "sa-east"} {
		ms = append(ms, mirrors.NewMirror(mirrors.Spec{Name: n, Weight: 100}, nil))
	}
	cfg := &config.Config{Sync: config.Sync{Repositories: []config.SyncRepository{{Name: "app"}, {Name: "tools/lint"}, {Name: "base"}}}}
	r := v.recorder(cfg, ms)
	obs := redirector.Observation{Kind: redirector.KindBlob, Status: 307, Mirror: "eu-west", Reason: mirrors.ReasonCountry, Elapsed: 3 * time.Microsecond}
	dg, _ := oci.ParseDigest(blobA)
	served := mirrors.Decision{Mirror: "eu-west", Reason: mirrors.ReasonCountry, DistanceKm: 420}
	missed := mirrors.Decision{Mirror: "us-east", Reason: mirrors.ReasonDistance, DistanceKm: 6200, Missed: "eu-west"}
	for _, bc := range []struct {
		name string
		run  func()
	}{
		{"observe-reference", func() { m.Observe(obs) }},
		{"served", func() { r.record("EU", "app", dg, &served) }},
		{"missed", func() { r.record("EU", "app", dg, &missed) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bc.run()
			}
		})
		b.Run(bc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					bc.run()
				}
			})
		})
	}
}

// BenchmarkBlobRedirectDemand is BenchmarkBlobRedirectWarm with and without demand counting, in
// the same run: a blob its first-ranked mirror holds (served), and one it lacks (missed: the
// next mirror serves, a miss is counted and tracked).
func BenchmarkBlobRedirectDemand(b *testing.B) {
	eu := newBlobServer(b, "", blobA)
	us := newBlobServer(b, "", blobA, blobB)
	cfg := demandConfig(b, eu, us)
	log := slog.New(slog.DiscardHandler)
	with, err := New(context.Background(), cfg, BuildInfo{}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer with.Close()
	without := &Service{log: log, metrics: NewMetrics(BuildInfo{})} // no demand counting
	g, err := without.build(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	without.cur.Store(g)
	defer without.Close()
	for _, blob := range []struct{ name, digest, mirror string }{{"served", blobA, "eu-west"}, {"missed", blobB, "us-east"}} {
		for _, svc := range []struct {
			name string
			s    *Service
		}{{"without", without}, {"with", with}} {
			b.Run(blob.name+"/"+svc.name, func(b *testing.B) {
				req := httptest.NewRequest("GET", "/v2/app/blobs/"+blob.digest, nil)
				req.RemoteAddr = "192.0.2.1:5000"
				req.Header.Set("X-Forwarded-For", "89.160.20.112")
				w := &nullWriter{h: http.Header{}}
				h := svc.s.Handler()
				h.ServeHTTP(w, req)
				if w.h.Get("X-Mirror") != blob.mirror {
					b.Fatalf("warm-up went to %q", w.h.Get("X-Mirror"))
				}
				b.ReportAllocs()
				for b.Loop() {
					clear(w.h)
					h.ServeHTTP(w, req)
				}
			})
		}
	}
}
