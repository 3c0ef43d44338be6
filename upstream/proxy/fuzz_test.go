package proxy

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/happy-turtle/oci-proxy/oci"
)

// FuzzRewriteLink: whatever the upstream sends, an accepted link points at the client's own
// tags/list path on the proxy, carries only a valid last and n, and is a fixed point: rewriting
// it again gives it back.
func FuzzRewriteLink(f *testing.F) {
	for _, tc := range goodLinks {
		f.Add(tc.link, tc.client)
	}
	for _, tc := range badLinks {
		f.Add(tc.link, tc.client)
	}
	f.Fuzz(func(t *testing.T, link, client string) {
		out, ok := RewriteLink(link, client)
		if !ok {
			if out != "" {
				t.Fatalf("refused with output %q", out)
			}
			return
		}
		prefix, suffix := "</v2/"+client+"/tags/list?", `>; rel="next"`
		if !strings.HasPrefix(out, prefix) || !strings.HasSuffix(out, suffix) || len(out) < len(prefix)+len(suffix) {
			t.Fatalf("RewriteLink(%q, %q) = %q: not </v2/%s/tags/list?...>; rel=\"next\"", link, client, out, client)
		}
		target := out[1:strings.IndexByte(out, '>')]
		u, err := url.Parse(target)
		if err != nil {
			t.Fatalf("output target %q does not parse: %v", target, err)
		}
		if u.Scheme != "" || u.Host != "" || u.User != nil || u.Path != "/v2/"+client+"/tags/list" {
			t.Fatalf("output target %q names a host or another path", target)
		}
		query := out[len(prefix) : len(out)-len(suffix)]
		vals, err := url.ParseQuery(query)
		if err != nil {
			t.Fatalf("output query %q does not parse: %v", query, err)
		}
		for k, v := range vals {
			if k != "n" && k != "last" || len(v) != 1 {
				t.Fatalf("output query %q has %s=%v", query, k, v)
			}
		}
		if oci.ValidateTag(vals.Get("last")) != nil {
			t.Fatalf("output query %q has an invalid last", query)
		}
		if ns, has := vals["n"]; has {
			if n, err := strconv.Atoi(ns[0]); err != nil || n < 1 || n > MaxPageSize || strconv.Itoa(n) != ns[0] {
				t.Fatalf("output query %q has an invalid n", query)
			}
		}
		again, ok := RewriteLink(out, client)
		if !ok || again != out {
			t.Fatalf("rewriting %q again gives %q, %v", out, again, ok)
		}
	})
}
