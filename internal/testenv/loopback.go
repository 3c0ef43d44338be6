package testenv

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"
)

// NoRedirectClient returns a client that shows a server's own answers: it never follows a
// redirect. Its connections leave from src, a loopback address such as "127.0.0.9", so that the
// server sees a request from that "host"; with src "" the kernel picks (127.0.0.1 for a loopback
// server). Its idle connections close with the test.
func NoRedirectClient(t testing.TB, src string) *http.Client {
	t.Helper()
	tr := transportFrom(t, src)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// NewRequest returns a request for method and rawURL carrying header, or fails the test.
func NewRequest(t testing.TB, method, rawURL string, header http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return req
}

// Answer is a server's whole answer to one request.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// Send sends req with c and reads the answer's body in full; an error in either fails the test.
// The client's timeout bounds both.
func Send(t testing.TB, c *http.Client, req *http.Request) Answer {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Redacted(), err)
	}
	return Answer{resp.StatusCode, resp.Header, body}
}

// Forward accepts connections on 127.0.0.1 and pipes each, byte for byte, to target
// ("HOST:PORT"); it returns "localhost:PORT" for them. It lets a server on a loopback IP literal
// be named by a host name: go-containerregistry clients refuse a redirect to another host's
// private IP literal but follow one to localhost. As bytes pass unchanged, the Host header is the
// name the client used, which a SigV4 signature over the host then covers. The forwarder stops
// with the test.
func Forward(t testing.TB, target string) string {
	t.Helper()
	return ForwardThrough(t, target, func(dst io.Writer, src io.Reader) { _, _ = io.Copy(dst, src) })
}

// ForwardThrough is Forward with pipe passing the bytes of each direction of each connection
// (from src to dst, until either fails), so that a test can slow or stop them.
func ForwardThrough(t testing.TB, target string, pipe func(dst io.Writer, src io.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("forwarder to %s: %v", target, err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				track(up)
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { pipe(up, c); done <- struct{}{} }()
				go func() { pipe(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "localhost:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// ForwardHTTP is Forward for servers that answer only requests naming their own host: a reverse
// proxy on 127.0.0.1 to target ("http://HOST:PORT") that sends target's host as Host (as
// fake-gcs-server, which serves XML paths only for its public host, needs). It returns
// "localhost:PORT" and stops with the test.
func ForwardHTTP(t testing.TB, target string) string {
	t.Helper()
	tu, err := url.Parse(target)
	if err != nil || tu.Host == "" {
		t.Fatalf("forwarder target %q: not a URL", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("forwarder to %s: %v", target, err)
	}
	serve(t, ln, &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(tu) }})
	return "localhost:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// serve serves h on l until the test ends, then shuts the server down gracefully (closing it
// after 5 s) and waits for it.
func serve(t testing.TB, l net.Listener, h http.Handler) {
	t.Helper()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       time.Minute,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("server on %s: %v", l.Addr(), err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	})
}

// transportFrom is a transport whose connections leave from src, a loopback address ("" lets
// the kernel pick): the server then sees them come from that "host".
func transportFrom(t testing.TB, src string) *http.Transport {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		a, err := netip.ParseAddr(src)
		if err != nil {
			t.Fatalf("source address %q: %v", src, err)
		}
		d.LocalAddr = &net.TCPAddr{IP: a.AsSlice()}
	}
	return &http.Transport{
		DialContext:           d.DialContext,
		ResponseHeaderTimeout: time.Minute,
		IdleConnTimeout:       30 * time.Second,
		MaxIdleConnsPerHost:   16,
	}
}
