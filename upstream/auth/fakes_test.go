package auth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeUpstream is a registry and its token server on loopback, in the way GHCR and distribution
// behave: the registry answers 401 with a Bearer challenge naming the token server until a
// request carries a token the server issued; the token server checks Basic credentials and
// issues tokens. Fields set before the first request configure it; the rest it records.
type fakeUpstream struct {
	registry, tokens *httptest.Server

	mu sync.Mutex
	// configuration
	users       map[string]string // Basic credentials the token server (or a Basic registry) accepts
	anonymous   bool              // the token server issues tokens without credentials
	basic       bool              // the registry asks for Basic credentials instead of a token
	omitScope   bool              // the challenge names no scope
	realm       string            // the challenge's realm when set, else the token server's /token
	expiresIn   string            // the expires_in JSON value, "" to leave it out
	accessToken bool              // answer access_token instead of token
	tokenStatus int               // the token server answers this status instead, when non-zero
	tokenBody   string            // ... with this body
	gate        chan struct{}     // the token server waits for it to close, when non-nil
	redirect    string            // the registry redirects blob requests here, when set
	fixedToken  string            // the token issued, when set, instead of tok-<n>-<user>
	// records
	issued    map[string]bool
	tokenReqs []tokenCall
	regAuth   []string // Authorization of every registry request
	reg401    int      // 401s the registry answered
	pings     int      // GET /v2/ requests
	n         int
}

type tokenCall struct {
	User    string
	Service string
	Scopes  []string
	Auth    string // the Authorization header as received
}

const fakeService = "fake-registry"

// registry401Body is what the fake registry's 401 carries, checked when it must pass through.
const registry401Body = `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}` + "\n"

// newFakeUpstream starts the servers after configure (which may be nil) has set the fields.
func newFakeUpstream(t testing.TB, configure func(f *fakeUpstream)) *fakeUpstream {
	f := &fakeUpstream{users: map[string]string{}, issued: map[string]bool{}, expiresIn: "300", anonymous: true}
	if configure != nil {
		configure(f)
	}
	f.tokens = httptest.NewServer(http.HandlerFunc(f.serveToken))
	f.registry = httptest.NewServer(http.HandlerFunc(f.serveRegistry))
	t.Cleanup(func() {
		f.registry.Close()
		f.tokens.Close()
	})
	return f
}

func (f *fakeUpstream) v2() *url.URL {
	u, _ := url.Parse(f.registry.URL + "/v2/")
	return u
}

func (f *fakeUpstream) serveToken(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	user, pass, hasBasic := r.BasicAuth()
	q := r.URL.Query()
	f.tokenReqs = append(f.tokenReqs, tokenCall{User: user, Service: q.Get("service"), Scopes: q["scope"], Auth: r.Header.Get("Authorization")})
	w.Header().Set("Content-Type", "application/json")
	if f.tokenStatus != 0 {
		w.WriteHeader(f.tokenStatus)
		_, _ = io.WriteString(w, f.tokenBody)
		return
	}
	if hasBasic && f.users[user] != pass || !hasBasic && !f.anonymous {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`)
		return
	}
	f.n++
	tok := fmt.Sprintf("tok-%d-%s", f.n, user)
	if f.fixedToken != "" {
		tok = f.fixedToken
	}
	f.issued[tok] = true
	field := "token"
	if f.accessToken {
		field = "access_token"
	}
	body := fmt.Sprintf(`{%q:%q`, field, tok)
	if f.expiresIn != "" {
		body += `,"expires_in":` + f.expiresIn
	}
	_, _ = io.WriteString(w, body+`,"issued_at":"2020-01-01T00:00:00Z"}`)
}

func (f *fakeUpstream) serveRegistry(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	authz := r.Header.Get("Authorization")
	f.regAuth = append(f.regAuth, authz)
	if r.URL.Path == "/v2/" {
		f.pings++
	}
	ok := false
	if f.basic {
		user, pass, has := r.BasicAuth()
		ok = has && f.users[user] == pass
	} else if tok, found := strings.CutPrefix(authz, "Bearer "); found {
		ok = f.issued[tok]
	}
	if !ok {
		f.reg401++
		if f.basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="Registry Realm"`)
		} else {
			w.Header().Set("WWW-Authenticate", f.challenge(r.URL.Path))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, registry401Body)
		return
	}
	if f.redirect != "" && strings.Contains(r.URL.Path, "/blobs/") {
		http.Redirect(w, r, f.redirect, http.StatusTemporaryRedirect)
		return
	}
	_, _ = io.WriteString(w, "ok "+r.URL.Path)
}

// challenge names the repository of a /v2/<name>/manifests/<ref> path in its scope, as
// registries do.
func (f *fakeUpstream) challenge(path string) string {
	realm := f.realm
	if realm == "" {
		realm = f.tokens.URL + "/token"
	}
	scope := ""
	if name, _, found := strings.Cut(strings.TrimPrefix(path, "/v2/"), "/manifests/"); found && !f.omitScope {
		scope = "repository:" + name + ":pull"
	}
	return ChallengeHeader(realm, fakeService, scope)
}

func (f *fakeUpstream) tokenCalls() []tokenCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]tokenCall(nil), f.tokenReqs...)
}

func (f *fakeUpstream) registryAuth() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.regAuth...)
}

func (f *fakeUpstream) unauthorized() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reg401
}

func (f *fakeUpstream) set(fn func(f *fakeUpstream)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// fakeClock is an injectable clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// switchable is Credentials whose answer a test can change, as a rotated secret would.
type switchable struct {
	mu         sync.Mutex
	user, pass string
	err        error
}

func (s *switchable) Basic(context.Context, string) (string, string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user, s.pass, s.user != "", s.err
}

func (s *switchable) set(user, pass string) {
	s.mu.Lock()
	s.user, s.pass = user, pass
	s.mu.Unlock()
}

// get sends GET url through c under ctx and returns the status and body.
func get(t testing.TB, ctx context.Context, c *http.Client, u string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// logBuffer returns a logger writing every level, as text and as JSON, into the buffer.
func logBuffer() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	return slog.New(slog.NewMultiHandler(slog.NewTextHandler(&b, opts), slog.NewJSONHandler(&b, opts))), &b
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func mustParse(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
