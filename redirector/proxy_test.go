package redirector

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/upstream"
)

// fakeProxy answers 299 for what it serves and records every call; Admit lets in requests that
// carry an Authorization header and answers 401 otherwise.
type fakeProxy struct {
	calls []string
}

func (f *fakeProxy) Serve(w http.ResponseWriter, _ *http.Request, q ProxyRequest) {
	f.calls = append(f.calls, "serve "+q.Route.Kind.String()+" "+q.URL)
	w.WriteHeader(299)
}

func (f *fakeProxy) Admit(w http.ResponseWriter, r *http.Request, q ProxyRequest) bool {
	f.calls = append(f.calls, "admit "+q.Route.Kind.String())
	if r.Header.Get("Authorization") == "" {
		w.WriteHeader(http.StatusUnauthorized)
		return false
	}
	return true
}

func proxyTable(t *testing.T) *upstream.Table {
	t.Helper()
	def, _ := url.Parse(upstreamBase)
	tools, _ := url.Parse(toolsBase)
	priv, _ := url.Parse("https://ghcr.io/v2/acme-private/")
	tab, err := upstream.NewTable(def, []upstream.Route{
		{Prefix: "tools/", Base: tools, Mode: upstream.Proxy},
		{Prefix: "private/", Base: priv, Mode: upstream.Proxy, ClientAuth: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestProxyRoutes(t *testing.T) {
	present := "sha256:" + hex64
	absent := "sha256:" + strings.Repeat("1", 64)
	for _, tc := range []struct {
		name, method, target string
		authorized           bool
		wantStatus           int
		wantLocation         string
		wantMirror           string
		wantCalls            []string
	}{
		{name: "redirect route stays a redirect", method: "GET", target: "/v2/app/manifests/1.0",
			wantStatus: 307, wantLocation: upstreamBase + "app/manifests/1.0"},
		{name: "proxy route manifest", method: "GET", target: "/v2/tools/lint/manifests/1.0", wantStatus: 299,
			wantCalls: []string{"serve manifest " + toolsBase + "lint/manifests/1.0"}},
		{name: "proxy route manifest by digest, HEAD", method: "HEAD", target: "/v2/tools/lint/manifests/" + present, wantStatus: 299,
			wantCalls: []string{"serve manifest " + toolsBase + "lint/manifests/" + present}},
		{name: "proxy route tags keep the validated query", method: "GET", target: "/v2/tools/lint/tags/list?n=2&last=a&x=1", wantStatus: 299,
			wantCalls: []string{"serve tags " + toolsBase + "lint/tags/list?n=2&last=a"}},
		{name: "proxy route referrers", method: "GET", target: "/v2/tools/lint/referrers/" + present, wantStatus: 299,
			wantCalls: []string{"serve referrers " + toolsBase + "lint/referrers/" + present}},
		{name: "proxy route blob on a mirror", method: "GET", target: "/v2/tools/lint/blobs/" + present,
			wantStatus: 307, wantLocation: mirrorBase + "sha256/" + hex64, wantMirror: "eu-west"},
		{name: "proxy route blob on no mirror", method: "GET", target: "/v2/tools/lint/blobs/" + absent, wantStatus: 299, wantMirror: "upstream",
			wantCalls: []string{"serve blob " + toolsBase + "lint/blobs/" + absent}},
		{name: "client route blob on a mirror, no credentials", method: "GET", target: "/v2/private/app/blobs/" + present,
			wantStatus: 401, wantCalls: []string{"admit blob"}},
		{name: "client route blob on a mirror, admitted", method: "GET", target: "/v2/private/app/blobs/" + present, authorized: true,
			wantStatus: 307, wantLocation: mirrorBase + "sha256/" + hex64, wantMirror: "eu-west", wantCalls: []string{"admit blob"}},
		{name: "client route manifest goes to the proxy", method: "GET", target: "/v2/private/app/manifests/1", wantStatus: 299,
			wantCalls: []string{"serve manifest https://ghcr.io/v2/acme-private/app/manifests/1"}},
		{name: "base asks for credentials when a route relays them", method: "GET", target: "/v2/",
			wantStatus: 401, wantCalls: []string{"admit base"}},
		{name: "base with credentials", method: "GET", target: "/v2/", authorized: true,
			wantStatus: 200, wantCalls: []string{"admit base"}},
		{name: "writes are refused before the proxy", method: "PUT", target: "/v2/tools/lint/manifests/1", wantStatus: 405},
		{name: "bad names are refused before the proxy", method: "GET", target: "/v2/tools/Lint/manifests/1", wantStatus: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := &fakeProxy{}
			h := New(Options{Upstream: proxyTable(t), Proxy: fp, Blobs: &fakeBlobs{present: map[string]bool{present: true}}})
			r := httptest.NewRequest(tc.method, tc.target, nil)
			if tc.authorized {
				r.Header.Set("Authorization", "Bearer t")
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.wantStatus || w.Header().Get("Location") != tc.wantLocation || w.Header().Get("X-Mirror") != tc.wantMirror {
				t.Errorf("got %d, Location %q, X-Mirror %q; want %d, %q, %q", w.Code, w.Header().Get("Location"), w.Header().Get("X-Mirror"),
					tc.wantStatus, tc.wantLocation, tc.wantMirror)
			}
			if diff := cmp.Diff(tc.wantCalls, fp.calls); diff != "" {
				t.Errorf("proxy calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewPanicsWithoutProxy(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New accepted a proxy-mode route without a Proxy")
		}
	}()
	New(Options{Upstream: proxyTable(t)})
}
