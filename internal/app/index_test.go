package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// countingServer answers 404 to everything and counts the requests.
func countingServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// TestIndexPageOfService serves the index page of a service built from a config file to visitors
// placed by the trusted-proxy logic, the GeoIP test database and a network rule. No visit may
// reach a mirror, not even the s3 one whose credentials no probe has checked yet (an explanation
// would ask it first: the test does so at the end to show the counter counts).
func TestIndexPageOfService(t *testing.T) {
	testenv.IsolateAWS(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	eu, euN := countingServer(t)
	us, usN := countingServer(t)
	s3, s3N := countingServer(t)
	yaml := fmt.Sprintf(`
name: images.example.dev
upstream: http://127.0.0.2:5000/v2/acme/images/
trusted_proxies: ["192.0.2.0/24"]
geoip:
  database: %[4]s/city.mmdb
  asn_database: %[4]s/asn.mmdb
admin: {enabled: true}
mirrors:
  - {name: eu-west, provider: http, base_url: %[1]s/, country: DE, location: {lat: 50.1, lon: 8.7}}
  - {name: us-east, provider: http, base_url: %[2]s/, country: US, location: {lat: 38.9, lon: -77.4}, networks: ["10.20.0.0/16"]}
  - {name: asia, provider: s3, bucket: b, region: ap-southeast-1, endpoint: %[3]s, country: SG, location: {lat: 1.35, lon: 103.8}}
sync:
  repositories:
    - {name: app, tags: ["1.*", "1.0", latest]}
    - {name: tools/lint}
`, eu.URL, us.URL, s3.URL, geoDir(t))
	cfg := loadYAML(t, yaml)
	svc, err := New(context.Background(), cfg, BuildInfo{Version: "v9.8.7"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()

	common := []string{
		"<code>docker pull images.example.dev/app:1.0</code>",
		"<code>docker pull images.example.dev/tools/lint</code>",
		`<tr data-mirror="asia"><td><strong>asia</strong></td><td>s3</td><td>SG, AS, at 1.35, 103.80</td><td class="ok">healthy</td>`,
		"oci-proxy v9.8.7",
	}
	for _, tc := range []struct {
		name, remote, xff string
		want              []string
	}{
		{"germany", "192.0.2.1:5000", "89.160.20.112", []string{
			"<code>89.160.20.112</code>",
			"country DE, continent EU",
			`<strong>eu-west</strong>, reason <code id="visitor-reason">country</code>: the mirror is in your country`,
			`<tr class="chosen" data-mirror="eu-west">`,
		}},
		{"britain", "192.0.2.1:5000", "81.2.69.142", []string{
			"country GB, continent EU",
			`<strong>eu-west</strong>, reason <code id="visitor-reason">continent</code>`,
			"2nd, distance, 5,9", // us-east, about 5,900 km from London
		}},
		{"network rule", "192.0.2.1:5000", "10.20.3.4", []string{
			"networks net:us-east",
			`<strong>us-east</strong>, reason <code id="visitor-reason">network</code>`,
		}},
		{"spoofed header from an untrusted client", "216.160.83.56:5000", "89.160.20.112", []string{
			"<code>216.160.83.56</code>",
			`<strong>us-east</strong>, reason <code id="visitor-reason">country</code>`,
		}},
		{"not located", "192.0.2.1:5000", "192.0.2.200", []string{
			"unknown (no network rule or GeoIP record",
			`reason <code id="visitor-reason">fallback:no-geo</code>: your address could not be located, so a mirror is chosen by weight alone`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tc.remote
			req.Header.Set("X-Forwarded-For", tc.xff)
			rec := httptest.NewRecorder()
			svc.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d", rec.Code)
			}
			body := rec.Body.String()
			for _, s := range append(tc.want, common...) {
				if !strings.Contains(body, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			if t.Failed() {
				t.Logf("page:\n%s", body)
			}
		})
	}
	if n := euN.Load() + usN.Load() + s3N.Load(); n != 0 {
		t.Fatalf("the page visits made %d requests to mirrors", n)
	}

	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/_/resolve?ip=89.160.20.112", nil))
	if rec.Code != http.StatusOK || s3N.Load() == 0 {
		t.Errorf("/_/resolve: status %d, %d requests to the s3 mirror; want 200 and its credentials probed", rec.Code, s3N.Load())
	}

	// A blob that eu-west, first for a German client, lacks (every mirror here answers 404)
	// shows in its Missed column.
	page := func() string {
		req := httptest.NewRequest("GET", "/", nil)
		rec := httptest.NewRecorder()
		svc.Handler().ServeHTTP(rec, req)
		return rec.Body.String()
	}
	missed := `<td class="misses">0</td></tr>`
	if got := strings.Count(page(), missed); got != 3 {
		t.Errorf("%d mirrors show no misses, want all 3", got)
	}
	req := forwardedRequest("/v2/app/blobs/" + blobA)
	svc.Handler().ServeHTTP(httptest.NewRecorder(), req)
	body := page()
	if i := strings.Index(body, `data-mirror="eu-west"`); i < 0 || !strings.HasPrefix(body[i+strings.Index(body[i:], `<td class="misses">`):], `<td class="misses">1</td>`) {
		t.Errorf("eu-west's row does not show the miss:\n%s", body)
	}
}

func TestPullTag(t *testing.T) {
	for _, tc := range []struct {
		tags []string
		want string
	}{
		{nil, ""},
		{[]string{"1.*", "latest"}, "latest"},
		{[]string{"v[0-9]*", "?.0"}, ""},
		{[]string{"1.0.0", "latest"}, "1.0.0"},
	} {
		if got := pullTag(tc.tags); got != tc.want {
			t.Errorf("pullTag(%q) = %q, want %q", tc.tags, got, tc.want)
		}
	}
}

// BenchmarkIndexPageOfService is a visit of the index page through the wired service: trusted
// proxy and one X-Forwarded-For hop, GeoIP City and ASN lookup, the ranking of two mirrors, their
// health and the page. BenchmarkBlobRedirectWarm, the same client's blob redirect, is the
// reference it is read against.
func BenchmarkIndexPageOfService(b *testing.B) {
	eu := newBlobServer(b, "eu/blobs/", blobA)
	us := newBlobServer(b, "", blobA)
	svc := testService(b, eu, us, BuildInfo{})
	req := forwardedRequest("/")
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		svc.Handler().ServeHTTP(w, req)
	}
	if w.h.Get("Content-Length") == "" || eu.headCount()+us.headCount() != 0 {
		b.Fatalf("no page, or %d presence checks", eu.headCount()+us.headCount())
	}
}
