// Package upstream knows where the real registry is: it turns a validated route into the upstream
// URL a client is redirected to, choosing among the configured routes by longest name prefix. It
// does not parse requests (redirector does) and does not fetch anything.
package upstream

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// XMirror is the X-Mirror value (and the metric label) of a blob sent to the upstream rather than
// to a mirror, which is why no mirror may have this name.
const XMirror = "upstream"

// Route sends repository names under Prefix to Base. Base is the upstream's /v2/ URL with any
// repository prefix of its own, ending in "/", e.g. https://ghcr.io/v2/acme/.
type Route struct {
	Prefix string
	Base   *url.URL
	// Mode says whether clients are redirected to Base (the zero value) or served by the proxy.
	Mode Mode
	// ClientAuth (proxy mode only) means the clients' own credentials are relayed upstream.
	ClientAuth bool
	base       string // Base as a string, computed once
}

// Mode is how a route serves manifests, tags and referrers.
type Mode uint8

const (
	// Redirect sends clients to the upstream with a 307.
	Redirect Mode = iota
	// Proxy fetches from the upstream and answers the client itself: for upstreams that demand
	// tokens, which clients would ask for under the wrong name or not at all after a redirect.
	Proxy
)

func (m Mode) String() string {
	if m == Proxy {
		return "proxy"
	}
	return "redirect"
}

// Table holds the routes, longest prefix first; the last one has Prefix "" and catches every name.
type Table struct {
	routes []Route
}

// NewTable builds a table from a default upstream (may be nil when a route has prefix "") and
// extra routes. Bases must be absolute http(s) URLs whose path starts with /v2/; the caller
// (config) has validated them, this only normalises the trailing slash.
func NewTable(def *url.URL, extra []Route) (*Table, error) {
	t := &Table{}
	hasDefault := false
	for _, r := range extra {
		if r.Prefix == "" {
			hasDefault = true
		}
		nr := newRoute(r.Prefix, r.Base)
		nr.Mode, nr.ClientAuth = r.Mode, r.ClientAuth
		t.routes = append(t.routes, nr)
	}
	if !hasDefault {
		if def == nil {
			return nil, fmt.Errorf("no default upstream: set `upstream` or a route with prefix \"\"")
		}
		t.routes = append(t.routes, newRoute("", def))
	}
	sort.SliceStable(t.routes, func(i, j int) bool { return len(t.routes[i].Prefix) > len(t.routes[j].Prefix) })
	return t, nil
}

func newRoute(prefix string, base *url.URL) Route {
	b := *base
	if !strings.HasSuffix(b.Path, "/") {
		b.Path += "/"
		if b.RawPath != "" {
			b.RawPath += "/"
		}
	}
	b.RawQuery, b.Fragment = "", ""
	return Route{Prefix: prefix, Base: &b, base: b.String()}
}

// Lookup returns the route for a repository name and the name as the upstream knows it (the
// route's prefix removed).
func (t *Table) Lookup(name string) (*Route, string) {
	for i := range t.routes {
		r := &t.routes[i]
		if rest, ok := strings.CutPrefix(name, r.Prefix); ok && rest != "" {
			return r, rest
		}
	}
	// Unreachable with a default route: prefix "" matches every non-empty name.
	return &t.routes[len(t.routes)-1], name
}

// ClientAuth reports whether some route relays its clients' credentials: then the proxy
// challenges clients that bring none.
func (t *Table) ClientAuth() bool {
	for i := range t.routes {
		if t.routes[i].ClientAuth {
			return true
		}
	}
	return false
}

// Routes returns the routes, longest prefix first.
func (t *Table) Routes() []Route { return t.routes }

// URL joins the route's base with a validated name, a path kind ("manifests", "blobs", "tags",
// "referrers"), a reference and an encoded query. All parts must come from validated input: they
// are placed as they are.
func (r *Route) URL(name, kind, ref, query string) string {
	n := len(r.base) + len(name) + 1 + len(kind) + 1 + len(ref)
	if query != "" {
		n += 1 + len(query)
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(r.base)
	b.WriteString(name)
	b.WriteByte('/')
	b.WriteString(kind)
	if ref != "" {
		b.WriteByte('/')
		b.WriteString(ref)
	}
	if query != "" {
		b.WriteByte('?')
		b.WriteString(query)
	}
	return b.String()
}

// String returns the base URL.
func (r *Route) String() string { return r.base }

// Repository returns the route's registry host and the repository path under it for a name as
// the upstream knows it (as returned by Lookup): for base https://ghcr.io/v2/acme/ and "lint",
// ("ghcr.io", "acme/lint").
func (r *Route) Repository(upstreamName string) (host, repo string) {
	return r.Base.Host, strings.TrimPrefix(r.Base.Path, "/v2/") + upstreamName
}

// ClientName is the inverse of Lookup and Repository: the name clients use for repository repo
// of the upstream registry host (host "" matches any host, for events that do not say). ok is
// false when no route serves that repository.
func (t *Table) ClientName(host, repo string) (name string, ok bool) {
	best := -1
	for i := range t.routes {
		r := &t.routes[i]
		if host != "" && !strings.EqualFold(host, r.Base.Host) {
			continue
		}
		base := strings.TrimPrefix(r.Base.Path, "/v2/")
		rest, found := strings.CutPrefix(repo, base)
		if !found || rest == "" {
			continue
		}
		// The most specific base wins; the client name must route back to the same place.
		if best >= 0 && len(base) <= len(strings.TrimPrefix(t.routes[best].Base.Path, "/v2/")) {
			continue
		}
		if back, up := t.Lookup(r.Prefix + rest); back != r || up != rest {
			continue
		}
		best, name = i, r.Prefix+rest
	}
	return name, best >= 0
}
