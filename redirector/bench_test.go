package redirector

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

func BenchmarkParsePath(b *testing.B) {
	for _, bc := range []struct{ name, path string }{
		{"manifest-tag", "/v2/oci-proxy/manifests/1.0.0"},
		{"blob", "/v2/org/team/app/blobs/sha256:" + hex64},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, e := ParsePath(bc.path, ""); e != nil {
					b.Fatal(e)
				}
			}
		})
	}
}

// discardWriter is a ResponseWriter that keeps only its headers, so the benchmark measures the
// handler rather than httptest's recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

// serveLoop measures h answering GET target, and returns the last answer's writer.
func serveLoop(b *testing.B, h http.Handler, target string) *discardWriter {
	req := httptest.NewRequest("GET", target, nil)
	w := &discardWriter{h: make(http.Header, 8)}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	return w
}

func BenchmarkHandlerManifestRedirect(b *testing.B) {
	h := New(Options{Upstream: newTable(b)})
	w := serveLoop(b, h, "/v2/oci-proxy/manifests/1.0.0")
	if w.h.Get("Location") == "" {
		b.Fatal("no redirect")
	}
}

// BenchmarkHandlerManifestRedirectSpread asks for 4096 different tags in turn, sixteen times as
// many as the cache of manifest redirects holds: what a redirect costs when it misses.
func BenchmarkHandlerManifestRedirectSpread(b *testing.B) {
	h := New(Options{Upstream: newTable(b)})
	reqs := make([]*http.Request, 4096)
	for i := range reqs {
		reqs[i] = httptest.NewRequest("GET", "/v2/oci-proxy/manifests/"+strconv.Itoa(i), nil)
	}
	w := &discardWriter{h: make(http.Header, 8)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, reqs[i%len(reqs)])
		i++
	}
}

func BenchmarkHandlerBlobUpstream(b *testing.B) {
	h := New(Options{Upstream: newTable(b)})
	if w := serveLoop(b, h, "/v2/org/app/blobs/sha256:"+hex64); w.h.Get("X-Mirror") != "upstream" {
		b.Fatalf("X-Mirror = %q, want upstream", w.h.Get("X-Mirror"))
	}
}

// BenchmarkHandlerManifestRedirectLogged is BenchmarkHandlerManifestRedirect with the request log
// on: a text line per request, written to io.Discard, so that what is measured is building and
// formatting the line, not writing it.
func BenchmarkHandlerManifestRedirectLogged(b *testing.B) {
	h := New(Options{Upstream: newTable(b), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if w := serveLoop(b, h, "/v2/oci-proxy/manifests/1.0.0"); w.h.Get("Location") == "" {
		b.Fatal("no redirect")
	}
}

// BenchmarkIndexPage serves the index page to one visitor: "served" is the Handler (the
// configuration's parts rendered once, the visitor's part per visit), "one-template" renders the
// whole page per visit, the reference it is measured against.
func BenchmarkIndexPage(b *testing.B) {
	info := sampleIndex(nil)
	b.Run("served", func(b *testing.B) {
		h := New(Options{Upstream: newTable(b), Index: info})
		w := serveLoop(b, h, "/")
		if w.h.Get("Content-Length") == "" {
			b.Fatal("no page")
		}
	})
	b.Run("one-template", func(b *testing.B) {
		p := newIndexPage(info)
		addr := RemoteAddr(httptest.NewRequest("GET", "/", nil))
		b.ReportAllocs()
		for b.Loop() {
			if len(p.render(addr)) == 0 {
				b.Fatal("no page")
			}
		}
	})
}
