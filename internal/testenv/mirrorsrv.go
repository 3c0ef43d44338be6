package testenv

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// MirrorServer is a static HTTP file server standing in for an `http` mirror (a CDN or a public
// bucket): it answers GET and HEAD (ranges included) for the files put into it, 404 for any other
// path, and records every request, so that a test can tell which mirror a client was sent to.
type MirrorServer struct {
	// URLs are "http://HOST:PORT", one per listening address, in the order given to
	// StartMirrorServer; URL is the first.
	URLs []string
	URL  string

	srv *http.Server

	mu    sync.Mutex
	files map[string][]byte
	log   []Access
}

// Access is one request a MirrorServer received.
type Access struct {
	Method string
	Path   string
	Local  string // the listening address it arrived on, "HOST:PORT"
	Status int
}

// StartMirrorServer serves on a free port of each host ("127.0.0.5", ...): several addresses let
// one mirror be reached both by a loopback IP literal and through the name localhost
// (127.0.0.1), which go-containerregistry clients need in order to follow a redirect to it. The
// server stops with the test.
func StartMirrorServer(t testing.TB, hosts ...string) *MirrorServer {
	t.Helper()
	if len(hosts) == 0 {
		t.Fatal("StartMirrorServer: no host")
	}
	m := &MirrorServer{files: map[string][]byte{}}
	m.srv = &http.Server{
		Handler:           m,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute,
		IdleTimeout:       time.Minute,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, localAddrKey{}, c.LocalAddr().String())
		},
	}
	var wg sync.WaitGroup
	for _, h := range hosts {
		l, err := net.Listen("tcp", net.JoinHostPort(h, "0"))
		if err != nil {
			t.Fatalf("mirror server: listen on %s: %v", h, err)
		}
		m.URLs = append(m.URLs, "http://"+l.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("mirror server on %s: %v", l.Addr(), err)
			}
		}()
	}
	m.URL = m.URLs[0]
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.srv.Shutdown(ctx); err != nil {
			_ = m.srv.Close()
		}
		wg.Wait()
	})
	return m
}

type localAddrKey struct{}

// Put serves data at path ("/blobs/sha256/<hex>"), replacing what was there.
func (m *MirrorServer) Put(path string, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[path] = bytes.Clone(data)
}

// Remove stops serving path.
func (m *MirrorServer) Remove(path string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.files, path)
}

// Mark returns the position of the next request in the log, for Since.
func (m *MirrorServer) Mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.log)
}

// Since returns the requests received after mark (see Mark), oldest first.
func (m *MirrorServer) Since(mark int) []Access {
	m.mu.Lock()
	defer m.mu.Unlock()
	if mark > len(m.log) {
		mark = len(m.log)
	}
	return append([]Access(nil), m.log[mark:]...)
}

// ServeHTTP records the request before answering it, so that a client that has its answer is
// always in the log, with the status it got.
func (m *MirrorServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	local, _ := r.Context().Value(localAddrKey{}).(string)
	m.mu.Lock()
	data, ok := m.files[r.URL.Path]
	status := http.StatusOK
	switch {
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		status = http.StatusMethodNotAllowed
	case !ok:
		status = http.StatusNotFound
	}
	m.log = append(m.log, Access{Method: r.Method, Path: r.URL.Path, Local: local, Status: status})
	entry := len(m.log) - 1
	m.mu.Unlock()
	switch status {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", "GET, HEAD")
		w.WriteHeader(status)
	case http.StatusNotFound:
		http.NotFound(w, r)
	default:
		// ServeContent chooses the status (206 for a range, 416 for one past the end, ...):
		// the log takes it before the client can see it.
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(&statusLogger{ResponseWriter: w, m: m, entry: entry}, r, "", time.Time{}, bytes.NewReader(data))
	}
}

// statusLogger writes the status of a response into its entry of the log.
type statusLogger struct {
	http.ResponseWriter
	m     *MirrorServer
	entry int
}

func (s *statusLogger) WriteHeader(code int) {
	s.m.mu.Lock()
	s.m.log[s.entry].Status = code
	s.m.mu.Unlock()
	s.ResponseWriter.WriteHeader(code)
}
