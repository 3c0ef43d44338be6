package testenv

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"testing"
	"time"
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
	dialer := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: h.AsSlice()}}
	transport := &http.Transport{
		DialContext:           dialer.DialContext,
		ResponseHeaderTimeout: time.Minute,
		IdleConnTimeout:       30 * time.Second,
		MaxIdleConnsPerHost:   16,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(tu)
			// Rewrite has already dropped the incoming forwarding headers: the front is the
			// edge, and what it writes is all the service may believe.
			r.Out.Header.Set("X-Forwarded-For", client)
		},
		Transport: transport,
	}
	srv := &http.Server{
		Handler:           rp,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("front %s: %v", ln.Addr(), err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		transport.CloseIdleConnections()
	})
	addr := ln.Addr().String()
	return &Front{Addr: addr, URL: "http://" + addr, Host: h, Client: client}
}
