package app

import (
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/upstream/auth"
)

// upstreamClients are the transports of the configured upstreams, one per route, each doing the
// registry token flow with its route's credentials. Proxy mode fetches with them and sync copies
// with them, so both speak to GHCR, Docker Hub and private registries the same way.
type upstreamClients struct {
	base     *http.Transport            // the connection pool under every route's transport
	byPrefix map[string]*auth.Transport // by route prefix
	routes   []routeTransport           // longest upstream path first, for RoundTrip
}

type routeTransport struct {
	host, path string // the route's upstream host and /v2/ path with its repository prefix
	rt         *auth.Transport
}

func newUpstreamClients(cfg *config.Config, log *slog.Logger) (*upstreamClients, error) {
	base := newUpstreamTransport()
	u := &upstreamClients{base: base, byPrefix: map[string]*auth.Transport{}}
	add := func(prefix, host, path string, a config.Auth) error {
		creds, err := routeCredentials(a)
		if err != nil {
			return err
		}
		rt := auth.NewTransport(base, creds, auth.TransportOptions{Logger: log})
		u.byPrefix[prefix] = rt
		u.routes = append(u.routes, routeTransport{host: strings.ToLower(host), path: path, rt: rt})
		return nil
	}
	hasDefault := false
	for _, r := range cfg.Routes {
		hasDefault = hasDefault || r.Prefix == ""
		if err := add(r.Prefix, r.Upstream.Host, r.Upstream.Path, r.Auth); err != nil {
			return nil, fmt.Errorf("%s:%d: route %q: %w", cfg.File, r.Line, r.Prefix, err)
		}
	}
	if !hasDefault && cfg.Upstream != nil {
		if err := add("", cfg.Upstream.Host, cfg.Upstream.Path, config.Auth{}); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(u.routes, func(i, j int) bool { return len(u.routes[i].path) > len(u.routes[j].path) })
	return u, nil
}

// RoundTrip sends req with the transport of the route whose upstream it is for: the longest
// upstream path on req's host that req's path falls under; a request for the registry itself
// (/v2/) takes any route of that host. Other hosts (blob storage that a registry redirected to)
// go out without credentials.
func (u *upstreamClients) RoundTrip(req *http.Request) (*http.Response, error) {
	host := strings.ToLower(req.URL.Host)
	var any *auth.Transport
	for _, r := range u.routes {
		if r.host != host {
			continue
		}
		if strings.HasPrefix(req.URL.Path, r.path) {
			return r.rt.RoundTrip(req)
		}
		if any == nil {
			any = r.rt
		}
	}
	if any != nil {
		return any.RoundTrip(req)
	}
	return http.DefaultTransport.RoundTrip(req)
}

// Close releases the idle connections to the upstreams; requests in flight finish.
func (u *upstreamClients) Close() error {
	u.base.CloseIdleConnections()
	return nil
}
