package redirector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/happy-turtle/oci-proxy/upstream"
)

const (
	upstreamBase = "http://127.0.0.2:5000/v2/acme/images/"
	toolsBase    = "https://ghcr.io/v2/acme/"
	mirrorBase   = "https://mirror.example/blobs/"
)

func newTable(t testing.TB) *upstream.Table {
	t.Helper()
	def, _ := url.Parse(upstreamBase)
	tools, _ := url.Parse(toolsBase)
	tab, err := upstream.NewTable(def, []upstream.Route{{Prefix: "tools/", Base: tools}})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// fakeBlobs sends blobs whose digest it knows to a mirror and records the queries it saw.
type fakeBlobs struct {
	present map[string]bool
	seen    []BlobQuery
}

func (f *fakeBlobs) RouteBlob(_ context.Context, q BlobQuery) BlobTarget {
	f.seen = append(f.seen, q)
	if f.present[q.Digest.String()] {
		return BlobTarget{URL: mirrorBase + "sha256/" + q.Digest.Hex(), Mirror: "eu-west", Reason: "country"}
	}
	return BlobTarget{Reason: "fallback:not-present"}
}

type wantResp struct {
	status   int
	location string
	headers  map[string]string
	code     string // OCI error code in the body
	body     string // exact body, when set
}

func TestHandler(t *testing.T) {
	blobs := &fakeBlobs{present: map[string]bool{"sha256:" + hex64: true}}
	h := New(Options{Upstream: newTable(t), Blobs: blobs, Ready: func() error { return nil }})
	other := strings.Repeat("1", 64)
	tests := []struct {
		name, method, target string
		want                 wantResp
	}{
		{"base", "GET", "/v2/", wantResp{status: 200, body: "{}", headers: map[string]string{"Docker-Distribution-API-Version": "registry/2.0", "Content-Type": "application/json"}}},
		{"base no slash", "GET", "/v2", wantResp{status: 200, body: "{}"}},
		{"base head", "HEAD", "/v2/", wantResp{status: 200, body: ""}},
		{"manifest by tag", "GET", "/v2/oci-proxy/manifests/1.0.0", wantResp{status: 307, location: upstreamBase + "oci-proxy/manifests/1.0.0", headers: map[string]string{"Cache-Control": "no-store"}}},
		{"manifest head", "HEAD", "/v2/app/manifests/latest", wantResp{status: 307, location: upstreamBase + "app/manifests/latest"}},
		{"manifest by digest", "GET", "/v2/a/b/manifests/sha256:" + hex64, wantResp{status: 307, location: upstreamBase + "a/b/manifests/sha256:" + hex64}},
		{"manifest query dropped", "GET", "/v2/app/manifests/1?x=http://evil", wantResp{status: 307, location: upstreamBase + "app/manifests/1"}},
		{"route prefix stripped", "GET", "/v2/tools/lint/manifests/1", wantResp{status: 307, location: toolsBase + "lint/manifests/1"}},
		{"route prefix needs a rest", "GET", "/v2/tools/manifests/1", wantResp{status: 307, location: upstreamBase + "tools/manifests/1"}},
		{"tags", "GET", "/v2/app/tags/list", wantResp{status: 307, location: upstreamBase + "app/tags/list"}},
		{"tags paginated", "GET", "/v2/app/tags/list?n=2&last=v1&junk=1", wantResp{status: 307, location: upstreamBase + "app/tags/list?n=2&last=v1"}},
		{"referrers", "GET", "/v2/app/referrers/sha256:" + hex64 + "?artifactType=application/spdx%2Bjson", wantResp{status: 307, location: upstreamBase + "app/referrers/sha256:" + hex64 + "?artifactType=application%2Fspdx%2Bjson"}},
		{"blob on mirror", "GET", "/v2/app/blobs/sha256:" + hex64, wantResp{status: 307, location: mirrorBase + "sha256/" + hex64, headers: map[string]string{"X-Mirror": "eu-west", "X-Mirror-Reason": "country"}}},
		{"blob head on mirror", "HEAD", "/v2/app/blobs/sha256:" + hex64, wantResp{status: 307, location: mirrorBase + "sha256/" + hex64, headers: map[string]string{"X-Mirror": "eu-west"}}},
		{"blob not on mirror", "GET", "/v2/app/blobs/sha256:" + other, wantResp{status: 307, location: upstreamBase + "app/blobs/sha256:" + other, headers: map[string]string{"X-Mirror": "upstream", "X-Mirror-Reason": "fallback:not-present"}}},
		{"blob sha512", "GET", "/v2/app/blobs/sha512:" + hex128, wantResp{status: 307, location: upstreamBase + "app/blobs/sha512:" + hex128}},
		{"put manifest", "PUT", "/v2/app/manifests/1", wantResp{status: 405, code: CodeUnsupported, headers: map[string]string{"Allow": "GET, HEAD"}}},
		{"post upload", "POST", "/v2/app/blobs/uploads/", wantResp{status: 405, code: CodeUnsupported, headers: map[string]string{"Allow": "GET, HEAD"}}},
		{"delete blob", "DELETE", "/v2/app/blobs/sha256:" + hex64, wantResp{status: 405, code: CodeUnsupported}},
		{"patch invalid name", "PATCH", "/v2/BAD/blobs/uploads/x", wantResp{status: 405, code: CodeUnsupported}},
		{"options", "OPTIONS", "/v2/", wantResp{status: 405, code: CodeUnsupported}},
		{"get upload", "GET", "/v2/app/blobs/uploads/abc", wantResp{status: 405, code: CodeUnsupported}},
		{"invalid name", "GET", "/v2/UPPER/manifests/1", wantResp{status: 400, code: CodeNameInvalid, headers: map[string]string{"Content-Type": "application/json"}}},
		{"traversal", "GET", "/v2/app/../secret/manifests/1", wantResp{status: 400, code: CodeNameInvalid}},
		{"encoded slash", "GET", "/v2/app%2F..%2Fx/manifests/1", wantResp{status: 400, code: CodeNameInvalid}},
		{"bad tag", "GET", "/v2/app/manifests/-bad", wantResp{status: 404, code: CodeManifestUnknown}},
		{"bad digest", "GET", "/v2/app/blobs/sha256:1234", wantResp{status: 400, code: CodeDigestInvalid}},
		{"bad digest head", "HEAD", "/v2/app/blobs/sha256:1234", wantResp{status: 400, body: ""}},
		{"unknown endpoint", "GET", "/v2/_catalog", wantResp{status: 404, code: CodeNameUnknown}},
		{"healthz", "GET", "/healthz", wantResp{status: 200, body: "ok\n"}},
		{"readyz", "GET", "/readyz", wantResp{status: 200, body: "ready\n"}},
		{"index", "GET", "/", wantResp{status: 200, headers: map[string]string{"Content-Type": "text/html; charset=utf-8"}}},
		{"index post", "POST", "/", wantResp{status: 405}},
		{"elsewhere", "GET", "/favicon.ico", wantResp{status: 404}},
	}
	// Twice: the second time, manifest redirects come from the handler's cache of them.
	for pass := range 2 {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/%d", tc.name, pass), func(t *testing.T) {
				req := httptest.NewRequest(tc.method, "http://images.example"+tc.target, nil)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				checkResponse(t, rec, tc.want)
			})
		}
	}
}

// TestManifestLocationCache asks for many more manifests than the cache has slots, so that paths
// share slots and replace each other, each with GET, HEAD and a write: every answer must be the
// one the path alone gives.
func TestManifestLocationCache(t *testing.T) {
	h := New(Options{Upstream: newTable(t)})
	for pass := range 2 {
		for i := range 4 * locationSlots {
			for _, name := range []string{"app", "tools/lint"} {
				path := fmt.Sprintf("/v2/%s/manifests/v%d", name, i)
				want := upstreamBase + name + fmt.Sprintf("/manifests/v%d", i)
				if name == "tools/lint" {
					want = toolsBase + fmt.Sprintf("lint/manifests/v%d", i)
				}
				for _, method := range []string{"GET", "HEAD", "PUT"} {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
					switch {
					case method == "PUT" && rec.Code != http.StatusMethodNotAllowed:
						t.Fatalf("pass %d: PUT %s: status %d, want 405", pass, path, rec.Code)
					case method != "PUT" && (rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != want):
						t.Fatalf("pass %d: %s %s: %d %q, want 307 %q", pass, method, path, rec.Code, rec.Header().Get("Location"), want)
					}
				}
			}
		}
	}
}

func checkResponse(t *testing.T, rec *httptest.ResponseRecorder, want wantResp) {
	t.Helper()
	res := rec.Result()
	if res.StatusCode != want.status {
		t.Errorf("status = %d, want %d (body %q)", res.StatusCode, want.status, rec.Body.String())
	}
	if got := res.Header.Get("Location"); got != want.location {
		t.Errorf("Location = %q, want %q", got, want.location)
	}
	for k, v := range want.headers {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if want.body != "" || (want.code == "" && want.body == "" && rec.Body.Len() == 0) {
		if got := rec.Body.String(); got != want.body {
			t.Errorf("body = %q, want %q", got, want.body)
		}
	}
	if want.code != "" {
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", ct)
		}
		var body struct {
			Errors []struct{ Code, Message string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("error body %q is not JSON: %v", rec.Body.String(), err)
		}
		if len(body.Errors) != 1 || body.Errors[0].Code != want.code || body.Errors[0].Message == "" {
			t.Errorf("errors = %+v, want one %s with a message", body.Errors, want.code)
		}
	}
}

func TestHandlerBlobQuery(t *testing.T) {
	blobs := &fakeBlobs{}
	client := netip.MustParseAddr("81.2.69.142")
	h := New(Options{Upstream: newTable(t), Blobs: blobs, ClientAddr: func(*http.Request) netip.Addr { return client }})
	req := httptest.NewRequest("HEAD", "/v2/org/app/blobs/sha256:"+hex64, nil)
	h.ServeHTTP(httptest.NewRecorder(), req)
	want := []BlobQuery{{Client: client, Name: "org/app", Digest: mustDigest(t, "sha256:"+hex64), Method: "HEAD"}}
	if diff := cmp.Diff(want, blobs.seen, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.AllowUnexported(mustDigest(t, "sha256:"+hex64))); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}
}

func TestHandlerNoRouter(t *testing.T) {
	h := New(Options{Upstream: newTable(t)})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v2/app/blobs/sha256:"+hex64, nil))
	checkResponse(t, rec, wantResp{status: 307, location: upstreamBase + "app/blobs/sha256:" + hex64,
		headers: map[string]string{"X-Mirror": "upstream", "X-Mirror-Reason": "no-mirrors"}})
}

func TestHandlerNotReady(t *testing.T) {
	h := New(Options{Upstream: newTable(t), Ready: func() error { return errors.New("geoip database missing") }})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	checkResponse(t, rec, wantResp{status: 503, body: "not ready\n"})
}

func TestHandlerMount(t *testing.T) {
	h := New(Options{Upstream: newTable(t), Mount: map[string]http.Handler{
		"/metrics": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("m")) }),
	}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	checkResponse(t, rec, wantResp{status: 200, body: "m"})
}

// TestJSONString checks that error messages always make valid JSON.
func TestJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " and \ slash`, "ctl \x00\x1f\x7f", "utf8 ä", "<tag>&"} {
		var got string
		if err := json.Unmarshal([]byte(jsonString(s)), &got); err != nil {
			t.Errorf("jsonString(%q) = %s: %v", s, jsonString(s), err)
		}
	}
}

// TestRequestLog checks the one line per request and its fixed keys.
func TestRequestLog(t *testing.T) {
	var buf strings.Builder
	h := New(Options{
		Upstream: newTable(t),
		Blobs:    routerFunc(func(BlobQuery) BlobTarget { return BlobTarget{Reason: "fallback:not-present", Country: "DE"} }),
		Logger:   slog.New(slog.NewJSONHandler(&buf, nil)),
	})
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v2/app/blobs/sha256:"+hex64, nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v2/App/manifests/1", nil))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2:\n%s", len(lines), buf.String())
	}
	var blob, bad map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &blob); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &bad); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"route": "blob", "method": "GET", "status": float64(307), "mirror": "upstream", "reason": "fallback:not-present", "country": "DE"}
	for k, v := range want {
		if blob[k] != v {
			t.Errorf("blob log %s = %v, want %v", k, blob[k], v)
		}
	}
	if _, ok := blob["latency"]; !ok {
		t.Errorf("blob log has no latency: %v", blob)
	}
	if bad["route"] != "invalid" || bad["status"] != float64(400) || bad["code"] != CodeNameInvalid {
		t.Errorf("invalid request log = %v", bad)
	}
}

type routerFunc func(BlobQuery) BlobTarget

func (f routerFunc) RouteBlob(_ context.Context, q BlobQuery) BlobTarget { return f(q) }

// TestBlobValuesShared checks that a router's prebuilt values become the headers as they are,
// without a copy, and that an answer sent upstream does not use them.
func TestBlobValuesShared(t *testing.T) {
	vals := &[3]string{"eu-west", "country", mirrorBase + "sha256/" + hex64}
	var up bool
	h := New(Options{Upstream: newTable(t), Blobs: routerFunc(func(BlobQuery) BlobTarget {
		if up {
			return BlobTarget{Reason: "fallback:not-present", Values: vals}
		}
		return BlobTarget{URL: vals[2], Mirror: vals[0], Reason: vals[1], Values: vals}
	})})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/v2/app/blobs/sha256:"+hex64, nil))
	hd := w.Result().Header
	if w.Code != 307 || hd.Get("Location") != vals[2] || hd.Get("X-Mirror") != "eu-west" || hd.Get("X-Mirror-Reason") != "country" {
		t.Fatalf("answer %d, headers %v", w.Code, hd)
	}
	if loc := w.Header()["Location"]; &loc[0] != &vals[2] || cap(loc) != 1 {
		t.Errorf("Location is not the shared value (cap %d)", cap(loc))
	}
	up = true
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/v2/app/blobs/sha256:"+hex64, nil))
	if loc := w.Header().Get("Location"); !strings.HasPrefix(loc, upstreamBase) || w.Header().Get("X-Mirror-Reason") != "fallback:not-present" {
		t.Fatalf("upstream answer: Location %q, headers %v", loc, w.Header())
	}
}
