package testenv

import (
	"net"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// Front stands in for a load balancer or CDN edge in front of the service: a reverse proxy on a
// loopback address of its own that tells the service, in X-Forwarded-For, that every request comes
// from one fixed client address. With the front's address among the service's trusted proxies,
// a pull through it looks like a pull from that client (a GeoIP test address of some country),
// while the client itself runs on this machine.
type Front struct {
	Addr   string     // "127.0.0.11:PORT", where clients connect
	URL    string     // "http://127.0.0.11:PORT"
	Host   netip.Addr // the front's own address: the one to trust
	Client string     // the address written into X-Forwarded-For
}

// Ref returns repoAndRef ("app:1.0", "app@sha256:...") as a reference through the front.
func (f *Front) Ref(repoAndRef string) string { return f.Addr + "/" + repoAndRef }

// StartFront starts a front on host (a loopback address such as "127.0.0.11") that forwards every
// request to target ("http://127.0.0.1:PORT") with X-Forwarded-For set to client, replacing any
// value the request carried. Its connections to the target leave from host too, so that the
// target sees the front's address as the peer, as behind a real load balancer. Answers, redirects
// included, pass through unchanged. The front stops with the test.
func StartFront(t testing.TB, host, client, target string) *Front {
	t.Helper()
	return startFront(t, host, client, target, func(r *httputil.ProxyRequest) {
		// Rewrite has already dropped the incoming forwarding headers: the front is the edge,
		// and what it writes is all the service may believe.
		r.Out.Header.Set("X-Forwarded-For", client)
	})
}

// StartChainFront is StartFront for a front that is one hop of a chain: it keeps the
// X-Forwarded-For the request carried (every header of it, joined) and appends client, as a load
// balancer appends the address its client connected from. The service must then believe only the
// hops right of its trusted proxies.
func StartChainFront(t testing.TB, host, client, target string) *Front {
	t.Helper()
	return startFront(t, host, client, target, func(r *httputil.ProxyRequest) {
		hops := append(slices.Clone(r.In.Header.Values("X-Forwarded-For")), client)
		r.Out.Header.Set("X-Forwarded-For", strings.Join(hops, ", "))
	})
}

// startFront starts a front whose forwarding headers forwarded writes.
func startFront(t testing.TB, host, client, target string, forwarded func(*httputil.ProxyRequest)) *Front {
	t.Helper()
	h, err := netip.ParseAddr(host)
	if err != nil {
		t.Fatalf("front address %q: %v", host, err)
	}
	if _, err := netip.ParseAddr(client); err != nil {
		t.Fatalf("front client address %q: %v", client, err)
	}
	tu, err := url.Parse(target)
	if err != nil || tu.Host == "" {
		t.Fatalf("front target %q: not a URL", target)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("front on %s: %v", host, err)
	}
	transport := transportFrom(t, host)
	t.Cleanup(transport.CloseIdleConnections)
	serve(t, ln, &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(tu)
			forwarded(r)
		},
		Transport: transport,
	})
	addr := ln.Addr().String()
	return &Front{Addr: addr, URL: "http://" + addr, Host: h, Client: client}
}
