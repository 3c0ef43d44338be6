package auth

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func newClient(f *fakeUpstream, creds Credentials, clock *fakeClock) (*http.Client, *Transport) {
	opts := TransportOptions{}
	if clock != nil {
		opts.Now = clock.Now
	}
	tr := NewTransport(nil, creds, opts)
	return &http.Client{Transport: tr}, tr
}

func TestTransportReusesTokenUntilNearExpiry(t *testing.T) {
	for _, tc := range []struct {
		name      string
		expiresIn string
		reuse     time.Duration // a request this long after the fetch reuses the token
		refetch   time.Duration // one this long after fetches a new one
	}{
		// 300 s: the margin is 30 s.
		{"expires_in 300", "300", 269 * time.Second, 271 * time.Second},
		// Missing: 60 s as the token spec says, and a margin of a tenth of that.
		{"expires_in missing", "", 53 * time.Second, 55 * time.Second},
		{"expires_in zero", "0", 53 * time.Second, 55 * time.Second},
		// Far too long: cached for an hour at most.
		{"expires_in a year", "31536000", 59 * time.Minute, 61 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeUpstream(t, func(f *fakeUpstream) { f.expiresIn = tc.expiresIn })
			clock := newFakeClock()
			c, _ := newClient(f, nil, clock)
			ctx := WithScope(context.Background(), "repository:acme/app:pull")
			u := f.registry.URL + "/v2/acme/app/manifests/1"

			if code, body, _ := get(t, ctx, c, u); code != http.StatusOK {
				t.Fatalf("first request: %d %s", code, body)
			}
			clock.Advance(tc.reuse)
			if code, _, _ := get(t, ctx, c, u); code != http.StatusOK {
				t.Fatalf("second request: %d", code)
			}
			if n := len(f.tokenCalls()); n != 1 {
				t.Fatalf("%d token requests before %v, want 1", n, tc.reuse)
			}
			if n := f.unauthorized(); n != 1 {
				t.Errorf("registry answered 401 %d times, want 1: the cached token was not sent at once", n)
			}
			clock.Advance(tc.refetch - tc.reuse)
			if code, _, _ := get(t, ctx, c, u); code != http.StatusOK {
				t.Fatalf("third request: %d", code)
			}
			if n := len(f.tokenCalls()); n != 2 {
				t.Fatalf("%d token requests after %v, want 2", n, tc.refetch)
			}
		})
	}
}

func TestTransportMergesConcurrentFetches(t *testing.T) {
	const n = 8
	gate := make(chan struct{})
	f := newFakeUpstream(t, func(f *fakeUpstream) {
		f.gate = gate
		f.users["alice"] = "pw"
	})
	c, tr := newClient(f, Static("alice", "pw"), nil)
	var waiting atomic.Int32
	tr.waiting = func() {
		if waiting.Add(1) == n {
			close(gate)
		}
	}
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			ctx := WithScope(context.Background(), "repository:acme/app:pull")
			codes[i], _, _ = get(t, ctx, c, f.registry.URL+"/v2/acme/app/manifests/1")
		})
	}
	wg.Wait()
	want := make([]int, n)
	for i := range want {
		want[i] = http.StatusOK
	}
	if d := cmp.Diff(want, codes); d != "" {
		t.Errorf("statuses (-want +got):\n%s", d)
	}
	if got := len(f.tokenCalls()); got != 1 {
		t.Errorf("%d token requests for %d concurrent requests, want 1", got, n)
	}
}

func TestTransportCredentials(t *testing.T) {
	for _, tc := range []struct {
		name      string
		creds     Credentials
		anonymous bool // the token server hands out anonymous tokens
		wantCode  int
		wantCalls []tokenCall
	}{
		{
			name: "basic credentials go to the realm", creds: Static("alice", "pw-a"), wantCode: http.StatusOK,
			wantCalls: []tokenCall{{User: "alice", Service: fakeService, Scopes: []string{"repository:acme/app:pull"}, Auth: "Basic YWxpY2U6cHctYQ=="}},
		},
		{
			name: "anonymous", creds: nil, anonymous: true, wantCode: http.StatusOK,
			wantCalls: []tokenCall{{Service: fakeService, Scopes: []string{"repository:acme/app:pull"}}},
		},
		{
			name: "wrong password: the registry's 401", creds: Static("alice", "wrong"), wantCode: http.StatusUnauthorized,
			wantCalls: []tokenCall{{User: "alice", Service: fakeService, Scopes: []string{"repository:acme/app:pull"}, Auth: "Basic YWxpY2U6d3Jvbmc="}},
		},
		{
			name: "anonymous refused: the registry's 401", creds: Anonymous{}, wantCode: http.StatusUnauthorized,
			wantCalls: []tokenCall{{Service: fakeService, Scopes: []string{"repository:acme/app:pull"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeUpstream(t, func(f *fakeUpstream) {
				f.anonymous = tc.anonymous
				f.users["alice"] = "pw-a"
			})
			c, _ := newClient(f, tc.creds, nil)
			code, body, h := get(t, context.Background(), c, f.registry.URL+"/v2/acme/app/manifests/1")
			if code != tc.wantCode {
				t.Fatalf("status %d, want %d (%s)", code, tc.wantCode, body)
			}
			if code == http.StatusUnauthorized {
				// Passed through unchanged: the proxy can answer its client with the upstream's word.
				if body != registry401Body {
					t.Errorf("401 body %q, want the registry's %q", body, registry401Body)
				}
				if got, want := h.Get("WWW-Authenticate"), f.challenge("/v2/acme/app/manifests/1"); got != want {
					t.Errorf("WWW-Authenticate %q, want the registry's %q", got, want)
				}
			}
			if d := cmp.Diff(tc.wantCalls, f.tokenCalls()); d != "" {
				t.Errorf("token requests (-want +got):\n%s", d)
			}
		})
	}
}

func TestTransportNeverSharesTokensBetweenCredentials(t *testing.T) {
	f := newFakeUpstream(t, func(f *fakeUpstream) { f.users["alice"], f.users["bob"] = "pw-a", "pw-b" })
	creds := &switchable{}
	c, _ := newClient(f, creds, nil)
	ctx := WithScope(context.Background(), "repository:acme/app:pull")
	u := f.registry.URL + "/v2/acme/app/manifests/1"
	for _, step := range []struct {
		user, pass string
		wantUser   string // whose token the registry sees
		wantCalls  int
	}{
		{"alice", "pw-a", "alice", 1},
		{"bob", "pw-b", "bob", 2},
		{"", "", "", 3}, // anonymous: its own token too
		{"alice", "pw-a", "alice", 3},
		{"bob", "pw-b", "bob", 3},
	} {
		creds.set(step.user, step.pass)
		if code, _, _ := get(t, ctx, c, u); code != http.StatusOK {
			t.Fatalf("as %q: status %d", step.user, code)
		}
		auth := f.registryAuth()
		if last := auth[len(auth)-1]; !strings.HasSuffix(last, "-"+step.wantUser) {
			t.Errorf("as %q the registry got %q, a token of another user", step.user, last)
		}
		if got := len(f.tokenCalls()); got != step.wantCalls {
			t.Errorf("as %q: %d token requests, want %d", step.user, got, step.wantCalls)
		}
	}
}

func TestTransportDeniedIsRemembered(t *testing.T) {
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			f := newFakeUpstream(t, func(f *fakeUpstream) { f.tokenStatus, f.tokenBody = status, `{"errors":[{"code":"DENIED"}]}` })
			clock := newFakeClock()
			c, tr := newClient(f, Static("alice", "pw"), clock)
			u := f.registry.URL + "/v2/acme/app/manifests/1"
			for range 3 {
				if code, _, _ := get(t, context.Background(), c, u); code != http.StatusUnauthorized {
					t.Fatalf("status %d, want the registry's 401", code)
				}
			}
			if n := len(f.tokenCalls()); n != 1 {
				t.Errorf("%d token requests within %v, want 1", n, deniedTTL)
			}
			clock.Advance(deniedTTL)
			get(t, context.Background(), c, u)
			if n := len(f.tokenCalls()); n != 2 {
				t.Errorf("%d token requests after %v, want 2", n, deniedTTL)
			}

			// The refusal itself is an error matched by ErrDenied.
			realm := mustParse(t, f.tokens.URL+"/token")
			k := tokenKey{realm: realm.String(), service: fakeService, scope: "repository:other:pull"}
			_, err := tr.token(context.Background(), k, realm, nil)
			if !errors.Is(err, ErrDenied) {
				t.Errorf("token error %v, want ErrDenied", err)
			}
		})
	}
}

func TestTransportRefetchesRevokedToken(t *testing.T) {
	f := newFakeUpstream(t, nil)
	c, _ := newClient(f, nil, nil)
	ctx := WithScope(context.Background(), "repository:acme/app:pull")
	u := f.registry.URL + "/v2/acme/app/manifests/1"
	get(t, ctx, c, u)
	f.set(func(f *fakeUpstream) { clear(f.issued) })
	if code, _, _ := get(t, ctx, c, u); code != http.StatusOK {
		t.Fatalf("status %d after the cached token was revoked, want a new token and 200", code)
	}
	if n := len(f.tokenCalls()); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestTransportTokenEndpointFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string // in the error
	}{
		{"server error", http.StatusInternalServerError, `oops`, "status 500"},
		{"redirect", http.StatusFound, ``, "status 302"},
		{"not JSON", http.StatusOK, `<html>`, "not a token JSON object"},
		{"no token", http.StatusOK, `{"expires_in":300}`, "no token"},
		{"too large", http.StatusOK, `{"token":"` + strings.Repeat("a", maxTokenBody) + `"}`, "larger than"},
		{"line break in the token", http.StatusOK, `{"token":"a\r\nX-Evil: 1"}`, "line break"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeUpstream(t, func(f *fakeUpstream) { f.tokenStatus, f.tokenBody = tc.status, tc.body })
			c, _ := newClient(f, nil, nil)
			_, err := c.Get(f.registry.URL + "/v2/acme/app/manifests/1")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "token from http://127.0.0.1") {
				t.Errorf("error %q does not say which token endpoint failed", err)
			}
		})
	}
}

// TestTokenBodyBound pins the bound on a token answer at 64 KiB: a JWT of 60 KiB is accepted,
// an answer of 65 KiB is not.
func TestTokenBodyBound(t *testing.T) {
	for _, tc := range []struct {
		size int
		ok   bool
	}{{60 << 10, true}, {65 << 10, false}} {
		tok := strings.Repeat("a", tc.size)
		f := newFakeUpstream(t, func(f *fakeUpstream) { f.fixedToken = tok })
		c, _ := newClient(f, nil, nil)
		_, err := c.Get(f.registry.URL + "/v2/acme/app/manifests/1")
		if (err == nil) != tc.ok {
			t.Errorf("token of %d bytes: error %v, want ok %v", tc.size, err, tc.ok)
		}
	}
}

func TestTransportTokenTimeout(t *testing.T) {
	f := newFakeUpstream(t, func(f *fakeUpstream) { f.gate = make(chan struct{}) }) // never opened: the token server hangs
	tr := NewTransport(nil, nil, TransportOptions{TokenTimeout: 50 * time.Millisecond})
	start := time.Now()
	_, err := (&http.Client{Transport: tr}).Get(f.registry.URL + "/v2/acme/app/manifests/1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want a deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v with a 50 ms timeout", took)
	}
}

func TestTransportAccessTokenField(t *testing.T) {
	f := newFakeUpstream(t, func(f *fakeUpstream) { f.accessToken = true })
	c, _ := newClient(f, nil, nil)
	if code, body, _ := get(t, context.Background(), c, f.registry.URL+"/v2/acme/app/manifests/1"); code != http.StatusOK {
		t.Fatalf("status %d %s", code, body)
	}
}

func TestTransportScope(t *testing.T) {
	for _, tc := range []struct {
		name      string
		omitScope bool
		ctxScope  string
		want      []string
	}{
		{"the challenge's scope wins", false, "repository:acme/other:pull", []string{"repository:acme/app:pull"}},
		{"the context's when the challenge has none", true, "repository:acme/app:pull", []string{"repository:acme/app:pull"}},
		{"none at all", true, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeUpstream(t, func(f *fakeUpstream) { f.omitScope = tc.omitScope })
			c, _ := newClient(f, nil, nil)
			ctx := context.Background()
			if tc.ctxScope != "" {
				ctx = WithScope(ctx, tc.ctxScope)
			}
			get(t, ctx, c, f.registry.URL+"/v2/acme/app/manifests/1")
			calls := f.tokenCalls()
			if len(calls) != 1 {
				t.Fatalf("%d token requests, want 1", len(calls))
			}
			if d := cmp.Diff(tc.want, calls[0].Scopes); d != "" {
				t.Errorf("scopes (-want +got):\n%s", d)
			}
		})
	}
}

func TestTransportBasicChallenge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		creds    Credentials
		wantCode int
		want401  int // 401s the registry answers over two requests
	}{
		{"credentials: sent after the first 401, then at once", Static("alice", "pw"), http.StatusOK, 1},
		{"none: the 401 passes through", nil, http.StatusUnauthorized, 2},
		{"wrong: the retry's 401 passes through", Static("alice", "nope"), http.StatusUnauthorized, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeUpstream(t, func(f *fakeUpstream) {
				f.basic = true
				f.users["alice"] = "pw"
			})
			c, _ := newClient(f, tc.creds, nil)
			for range 2 {
				code, body, _ := get(t, context.Background(), c, f.registry.URL+"/v2/acme/app/manifests/1")
				if code != tc.wantCode {
					t.Fatalf("status %d, want %d", code, tc.wantCode)
				}
				if code == http.StatusUnauthorized && body != registry401Body {
					t.Errorf("401 body %q, want the registry's", body)
				}
			}
			if got := f.unauthorized(); got != tc.want401 {
				t.Errorf("registry answered 401 %d times, want %d", got, tc.want401)
			}
			if n := len(f.tokenCalls()); n != 0 {
				t.Errorf("%d token requests to a Basic registry", n)
			}
		})
	}
}

func TestTransportClientToken(t *testing.T) {
	f := newFakeUpstream(t, func(f *fakeUpstream) { f.issued["client-own-token"] = true })
	c, tr := newClient(f, Static("alice", "pw"), nil)
	u := f.registry.URL + "/v2/acme/app/manifests/1"

	ctx := WithClientToken(WithScope(context.Background(), "repository:acme/app:pull"), "Bearer client-own-token")
	if code, _, _ := get(t, ctx, c, u); code != http.StatusOK {
		t.Fatalf("status %d with a valid client token", code)
	}
	bad := WithClientToken(context.Background(), "Bearer revoked")
	if code, body, _ := get(t, bad, c, u); code != http.StatusUnauthorized || body != registry401Body {
		t.Fatalf("status %d %q with a refused client token, want the registry's 401", code, body)
	}
	if d := cmp.Diff([]string{"Bearer client-own-token", "Bearer revoked"}, f.registryAuth()); d != "" {
		t.Errorf("Authorization at the registry (-want +got):\n%s", d)
	}
	if n := len(f.tokenCalls()); n != 0 {
		t.Errorf("%d token requests for relayed client tokens", n)
	}
	if n := tr.tokens.len(); n != 0 {
		t.Errorf("%d cached tokens after relayed client tokens", n)
	}

	// A later request without one uses the transport's own credentials, not the client's.
	f.set(func(f *fakeUpstream) { f.users["alice"] = "pw" })
	if code, _, _ := get(t, context.Background(), c, u); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	auth := f.registryAuth()
	if last := auth[len(auth)-1]; !strings.HasSuffix(last, "-alice") {
		t.Errorf("registry got %q, want the transport's own token", last)
	}
}

func TestTransportRefusesRealm(t *testing.T) {
	for _, realm := range []string{
		"ftp://127.0.0.1/token",
		"file:///etc/passwd",
		"/token",
		"127.0.0.1/token",
		"http://user:pw@127.0.0.1/token",
		"http:///token",
	} {
		t.Run(realm, func(t *testing.T) {
			f := newFakeUpstream(t, func(f *fakeUpstream) { f.realm = realm })
			c, _ := newClient(f, Static("alice", "pw"), nil)
			_, err := c.Get(f.registry.URL + "/v2/acme/app/manifests/1")
			if !errors.Is(err, ErrRealm) {
				t.Fatalf("error %v, want ErrRealm", err)
			}
			if n := len(f.tokenCalls()); n != 0 {
				t.Errorf("%d token requests", n)
			}
		})
	}
}

func TestTransportRedirectElsewhereCarriesNoCredentials(t *testing.T) {
	// The storage host a blob is redirected to asks for credentials itself: they are the
	// registry's, and must not go there, nor to a realm it names.
	var seen []string
	var mu sync.Mutex
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/basic") {
			w.Header().Set("WWW-Authenticate", `Basic realm="storage"`)
		} else {
			w.Header().Set("WWW-Authenticate", ChallengeHeader("http://"+r.Host+"/token", "storage", ""))
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer storage.Close()
	for _, kind := range []string{"basic", "bearer"} {
		t.Run(kind, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			f := newFakeUpstream(t, func(f *fakeUpstream) {
				f.redirect = storage.URL + "/bucket/" + kind
				f.users["alice"] = "pw"
			})
			c, _ := newClient(f, Static("alice", "pw"), nil)
			ctx := WithScope(context.Background(), "repository:acme/app:pull")
			code, _, _ := get(t, ctx, c, f.registry.URL+"/v2/acme/app/blobs/sha256:00")
			if code != http.StatusUnauthorized {
				t.Fatalf("blob: %d, want the storage's 401", code)
			}
			mu.Lock()
			defer mu.Unlock()
			if d := cmp.Diff([]string{""}, seen); d != "" {
				t.Errorf("Authorization at the storage host (-want +got):\n%s", d)
			}
		})
	}
}

func TestTransportUnreplayableBody(t *testing.T) {
	f := newFakeUpstream(t, nil)
	tr := NewTransport(nil, nil, TransportOptions{})
	req, err := http.NewRequest(http.MethodPost, f.registry.URL+"/v2/acme/app/blobs/uploads/", io.NopCloser(strings.NewReader("data")))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status %d, want the 401 back", resp.StatusCode)
	}
	if n := len(f.tokenCalls()); n != 0 {
		t.Errorf("%d token requests for a request that cannot be retried", n)
	}
}

func TestTransportCredentialsError(t *testing.T) {
	f := newFakeUpstream(t, nil)
	c, _ := newClient(f, &switchable{err: errors.New("helper exploded")}, nil)
	_, err := c.Get(f.registry.URL + "/v2/acme/app/manifests/1")
	if err == nil || !strings.Contains(err.Error(), "helper exploded") {
		t.Fatalf("error %v, want the credentials' error", err)
	}
	if n := len(f.registryAuth()); n != 0 {
		t.Errorf("%d requests went out without the credentials", n)
	}
}

func TestPing(t *testing.T) {
	f := newFakeUpstream(t, nil)
	clock := newFakeClock()
	c, tr := newClient(f, nil, clock)
	chs, err := tr.Ping(context.Background(), f.v2())
	if err != nil {
		t.Fatal(err)
	}
	want := []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": f.tokens.URL + "/token", "service": fakeService}}}
	if d := cmp.Diff(want, chs); d != "" {
		t.Errorf("challenges (-want +got):\n%s", d)
	}
	// The realm learnt by Ping lets the first request carry a token.
	ctx := WithScope(context.Background(), "repository:acme/app:pull")
	if code, _, _ := get(t, ctx, c, f.registry.URL+"/v2/acme/app/manifests/1"); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if n := f.unauthorized(); n != 1 {
		t.Errorf("registry answered 401 %d times, want 1 (the ping's)", n)
	}

	open := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer open.Close()
	if chs, err := tr.Ping(context.Background(), mustParse(t, open.URL+"/v2/")); err != nil || chs != nil {
		t.Errorf("Ping of an open registry = %v, %v; want nil, nil", chs, err)
	}
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer broken.Close()
	if _, err := tr.Ping(context.Background(), mustParse(t, broken.URL+"/v2/")); err == nil || !strings.Contains(err.Error(), "status 500") {
		t.Errorf("Ping of a broken registry: %v", err)
	}
}

func TestTTLCacheBound(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newTTLCache[int, int](3)
	c.put(1, 1, now.Add(time.Second), now)
	c.put(2, 2, now.Add(time.Hour), now)
	c.put(3, 3, now.Add(time.Hour), now)
	later := now.Add(2 * time.Second)
	c.put(4, 4, later.Add(time.Hour), later) // the expired entry makes room
	for k, want := range map[int]bool{1: false, 2: true, 3: true, 4: true} {
		if _, ok := c.get(k, later); ok != want {
			t.Errorf("get(%d) found %v, want %v", k, ok, want)
		}
	}
	for i := 5; i < 100; i++ {
		c.put(i, i, later.Add(time.Hour), later)
		if n := c.len(); n > 3 {
			t.Fatalf("%d entries in a cache of 3", n)
		}
	}
	if _, ok := c.get(99, later); !ok {
		t.Errorf("the latest entry was evicted")
	}
}

func TestTransportMaxEntries(t *testing.T) {
	f := newFakeUpstream(t, nil)
	tr := NewTransport(nil, nil, TransportOptions{MaxEntries: 2})
	c := &http.Client{Transport: tr}
	for _, repo := range []string{"a", "b", "c", "d"} {
		get(t, context.Background(), c, f.registry.URL+"/v2/"+repo+"/manifests/1")
	}
	if n := tr.tokens.len(); n != 2 {
		t.Errorf("%d cached tokens, want the bound of 2", n)
	}
}
