package proxy

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// discardWriter is a ResponseWriter that keeps nothing, so that benchmarks measure the proxy.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(s int)           { w.status = s }

func BenchmarkServeCachedDigest(b *testing.B) {
	u := newFakeUpstream(b, manifestAnswers())
	p := newTestProxy(u, Options{})
	q := digestRequest(u, "GET")
	r := httptest.NewRequest("GET", "http://images.example/v2/", nil)
	w := &discardWriter{h: make(http.Header)}
	p.Serve(w, r, q)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		p.Serve(w, r, q)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
	if c := u.count("GET " + digestPath); c != 1 {
		b.Fatalf("upstream got %d requests, want 1", c)
	}
}

// BenchmarkServeTagMiss is a full round trip to a loopback upstream: a tag whose answer is never
// fresh, so every request fetches, checks and stores it again.
func BenchmarkServeTagMiss(b *testing.B) {
	u := newFakeUpstream(b, manifestAnswers())
	p := newTestProxy(u, Options{TagTTL: -1, Timeout: 5 * time.Second})
	q := tagRequest(u, "GET")
	r := httptest.NewRequest("GET", "http://images.example/v2/", nil)
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		clear(w.h)
		p.Serve(w, r, q)
		if w.status != 200 || w.h.Get("X-Cache") != "miss" {
			b.Fatalf("status %d, X-Cache %q", w.status, w.h.Get("X-Cache"))
		}
		n++
	}
	if c := u.count("GET " + tagPath); c != n {
		b.Fatalf("upstream got %s requests, want %d", strconv.Itoa(c), n)
	}
}
