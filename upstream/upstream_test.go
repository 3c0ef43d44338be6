package upstream

import (
	"net/url"
	"strings"
	"testing"
)

func table(t *testing.T) *Table {
	t.Helper()
	def, _ := url.Parse("http://127.0.0.2:5000/v2/acme/images/")
	tools, _ := url.Parse("https://ghcr.io/v2/acme")
	tab, err := NewTable(def, []Route{{Prefix: "tools/", Base: tools}})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestLookupAndURL(t *testing.T) {
	tab := table(t)
	for _, tc := range []struct{ name, kind, ref, query, want string }{
		{"app", "manifests", "1.0", "", "http://127.0.0.2:5000/v2/acme/images/app/manifests/1.0"},
		{"org/app", "tags", "list", "n=1", "http://127.0.0.2:5000/v2/acme/images/org/app/tags/list?n=1"},
		{"tools/lint", "blobs", "sha256:x", "", "https://ghcr.io/v2/acme/lint/blobs/sha256:x"},
		{"tools", "manifests", "1", "", "http://127.0.0.2:5000/v2/acme/images/tools/manifests/1"},
		{"toolsx/a", "manifests", "1", "", "http://127.0.0.2:5000/v2/acme/images/toolsx/a/manifests/1"},
	} {
		r, up := tab.Lookup(tc.name)
		if got := r.URL(up, tc.kind, tc.ref, tc.query); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestClientName(t *testing.T) {
	tab := table(t)
	for _, tc := range []struct {
		host, repo, want string
		ok               bool
	}{
		{"127.0.0.2:5000", "acme/images/app", "app", true},
		{"", "acme/images/org/app", "org/app", true},
		{"ghcr.io", "acme/lint", "tools/lint", true},
		{"GHCR.io", "acme/lint", "tools/lint", true},
		{"", "acme/lint", "tools/lint", true},
		{"ghcr.io", "other/lint", "", false},
		{"127.0.0.2:5000", "acme/images", "", false},
		{"127.0.0.2:5000", "acme/imagesx/app", "", false},
		{"elsewhere.example", "acme/images/app", "", false},
	} {
		got, ok := tab.ClientName(tc.host, tc.repo)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ClientName(%q, %q) = %q, %v; want %q, %v", tc.host, tc.repo, got, ok, tc.want, tc.ok)
		}
		if ok {
			r, up := tab.Lookup(got)
			if h, repo := r.Repository(up); repo != tc.repo || (tc.host != "" && !strings.EqualFold(h, tc.host)) {
				t.Errorf("Repository(Lookup(%q)) = %s %s, want %s", got, h, repo, tc.repo)
			}
		}
	}
}
