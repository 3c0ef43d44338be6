package app

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const routesConfig = `upstream: https://registry.example/v2/acme/
admin: {enabled: true}
routes:
  - {prefix: tools/, upstream: "https://ghcr.io/v2/acme/", mode: proxy}
  - {prefix: private/, upstream: "https://ghcr.io/v2/acme-private/", mode: proxy, auth: {client: true}}
`

// resolve --name and the index page say which route and mode a name takes.
func TestRouteExplained(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(routesConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, want, repo string }{
		{"tools/lint", "tools/ → https://ghcr.io/v2/acme/ (proxy)", "ghcr.io/acme/lint"},
		{"private/app", "private/ → https://ghcr.io/v2/acme-private/ (proxy, clients' credentials)", "ghcr.io/acme-private/app"},
		{"app", "(any other name) → https://registry.example/v2/acme/ (redirect)", "registry.example/acme/app"},
	} {
		var out bytes.Buffer
		if err := Resolve(t.Context(), path, ResolveQuery{IP: "192.0.2.1", Name: tc.name}, &out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "name "+tc.name+": "+tc.want+"\n") || !strings.Contains(out.String(), "upstream repository "+tc.repo) {
			t.Errorf("resolve --name %s:\n%s\nwant %q and %s", tc.name, out.String(), tc.want, tc.repo)
		}
		out.Reset()
		if err := Resolve(t.Context(), path, ResolveQuery{IP: "192.0.2.1", Name: tc.name, JSON: true}, &out); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Route RouteExplanation `json:"route"`
		}
		if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.Route.UpstreamRepository != tc.repo {
			t.Errorf("resolve --name %s --json: %v\n%s", tc.name, err, out.String())
		}
	}
	var out bytes.Buffer
	if err := Resolve(t.Context(), path, ResolveQuery{IP: "192.0.2.1", Name: "Bad"}, &out); err == nil {
		t.Error("resolve accepted an invalid --name")
	}

	cfg, err := LoadServeConfig(path, "")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(t.Context(), cfg, BuildInfo{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/_/resolve?ip=192.0.2.1&name=tools/lint&format=text", nil))
	if !strings.Contains(rec.Body.String(), "name tools/lint: tools/ → https://ghcr.io/v2/acme/ (proxy)\n") {
		t.Errorf("/_/resolve?name=: %d\n%s", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	page := rec.Body.String()
	for _, want := range []string{"tools/ → https://ghcr.io/v2/acme/ (proxy)", "private/ → https://ghcr.io/v2/acme-private/ (proxy, clients&#39; credentials)"} {
		if !strings.Contains(page, want) {
			t.Errorf("index page lacks %q:\n%s", want, page)
		}
	}
}
