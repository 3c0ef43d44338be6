package redirector

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzParsePath: no panic; an accepted route round-trips; a refusal is a 4xx with an OCI code.
func FuzzParsePath(f *testing.F) {
	for _, tc := range validPaths {
		f.Add(tc.path, tc.query)
	}
	for _, tc := range invalidPaths {
		f.Add(tc.path, tc.query)
	}
	f.Fuzz(func(t *testing.T, path, query string) {
		r, e := ParsePath(path, query)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" {
				t.Fatalf("refusal %d %q", e.Status, e.Code)
			}
			return
		}
		if r.Kind < KindBase || r.Kind > KindBlob {
			t.Fatalf("accepted with kind %v", r.Kind)
		}
		checkRoundTrip(t, r)
	})
}

// FuzzHandler: whatever the method, path and query, the handler answers below 500, and every
// Location it sends starts with a configured base URL.
func FuzzHandler(f *testing.F) {
	for _, tc := range validPaths {
		f.Add("GET", tc.path, tc.query)
	}
	for _, tc := range invalidPaths {
		f.Add("HEAD", tc.path, tc.query)
	}
	f.Add("PUT", "/v2/app/manifests/1", "")
	f.Add("GET", "/v2/app/blobs/sha256:"+hex64, "")
	blobs := &fakeBlobs{present: map[string]bool{"sha256:" + hex64: true}}
	h := New(Options{Upstream: newTable(f), Blobs: blobs})
	f.Fuzz(func(t *testing.T, method, path, query string) {
		if !validMethod(method) {
			return
		}
		u := &url.URL{Scheme: "http", Host: "images.example", Path: path, RawQuery: query}
		// Build the request the way the server would after reading a request line: the raw path is
		// whatever the client sent, so set it directly when it is not the canonical encoding.
		u.RawPath = path
		req, err := http.NewRequest(method, u.String(), nil)
		if err != nil {
			return
		}
		blobs.seen = nil
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: status %d", method, u, rec.Code)
		}
		loc := rec.Header().Get("Location")
		if loc == "" {
			if rec.Code == http.StatusTemporaryRedirect {
				t.Fatalf("307 without Location")
			}
			return
		}
		if !strings.HasPrefix(loc, upstreamBase) && !strings.HasPrefix(loc, toolsBase) && !strings.HasPrefix(loc, mirrorBase) {
			t.Fatalf("Location %q leaves the configured hosts", loc)
		}
		if strings.ContainsAny(loc, "\r\n \\") || strings.Contains(loc[strings.Index(loc, "//")+2:], "//") {
			t.Fatalf("Location %q has characters that could change its meaning", loc)
		}
		if _, err := url.Parse(loc); err != nil {
			t.Fatalf("Location %q does not parse: %v", loc, err)
		}
	})
}

func validMethod(m string) bool {
	if m == "" || len(m) > 16 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}
