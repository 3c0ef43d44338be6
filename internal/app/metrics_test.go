package app

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/redirector"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// TestMetrics checks that /metrics counts requests by route and status class, blob redirects by
// mirror and reason, and reports mirror health, with no repository, digest or address in a label.
func TestMetrics(t *testing.T) {
	eu := newBlobServer(t, "eu/blobs/", blobA)
	us := newBlobServer(t, "", blobA)
	svc := testService(t, eu, us, BuildInfo{Version: "1.2.3", Commit: "abc"})
	get := func(target, xff string) {
		req := httptest.NewRequest("GET", target, nil)
		req.RemoteAddr = "192.0.2.1:1"
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		svc.Handler().ServeHTTP(httptest.NewRecorder(), req)
	}
	get("/v2/secret-repo/manifests/1.0", "")
	get("/v2/secret-repo/blobs/"+blobA, "89.160.20.112")
	get("/v2/secret-repo/blobs/"+blobA, "89.160.20.112")
	get("/v2/secret-repo/blobs/"+blobB, "89.160.20.112")
	get("/v2/BAD/manifests/1.0", "")

	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`oci_proxy_requests_total{route="manifest",status="3xx"} 1`,
		`oci_proxy_requests_total{route="blob",status="3xx"} 3`,
		`oci_proxy_requests_total{route="invalid",status="4xx"} 1`,
		`oci_proxy_blob_redirects_total{mirror="eu-west",reason="country"} 2`,
		`oci_proxy_blob_redirects_total{mirror="upstream",reason="fallback:not-present"} 1`,
		`oci_proxy_request_duration_seconds_count{route="blob"} 3`,
		`oci_proxy_mirror_healthy{mirror="eu-west"} 1`,
		`oci_proxy_build_info{commit="abc",goversion=`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, leak := range []string{"secret-repo", "89.160.20.112", strings.TrimPrefix(blobA, "sha256:")} {
		if strings.Contains(text, leak) {
			t.Errorf("metrics contain %q", leak)
		}
	}
}

// BenchmarkObserve is what metrics cost a blob redirect: a request counter, a latency histogram
// and a blob counter by mirror and reason. Parallel, all cores update the same series, as under
// load.
func BenchmarkObserve(b *testing.B) {
	m := NewMetrics(BuildInfo{})
	o := redirector.Observation{Kind: redirector.KindBlob, Status: 307, Mirror: upstream.XMirror, Reason: mirrors.ReasonCountry, Elapsed: 3 * time.Microsecond}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Observe(o)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Observe(o)
			}
		})
	})
}
