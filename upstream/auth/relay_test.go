package auth

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// relayFixture is a relay in front of two fake upstreams: "tools/" names go to upstream a
// under acme/, "lib/" to upstream a under library/, "other/" to upstream b. An empty
// opts.Login stands for upstream a.
type relayFixture struct {
	a, b  *fakeUpstream
	clock *fakeClock
	srv   *httptest.Server
}

func newRelayFixture(t *testing.T, configure func(a *fakeUpstream), opts RelayOptions) *relayFixture {
	fx := &relayFixture{clock: newFakeClock()}
	fx.a = newFakeUpstream(t, func(f *fakeUpstream) {
		f.users["alice"] = "pw"
		if configure != nil {
			configure(f)
		}
	})
	fx.b = newFakeUpstream(t, nil)
	routes := []struct {
		prefix string
		base   *url.URL
		repo   string
	}{
		{"tools/", mustParse(t, fx.a.registry.URL+"/v2/acme/"), "acme/"},
		{"lib/", mustParse(t, fx.a.registry.URL+"/v2/library/"), "library/"},
		{"other/", mustParse(t, fx.b.registry.URL+"/v2/"), ""},
	}
	opts.MapScope = func(name string) (*url.URL, string, bool) {
		for _, r := range routes {
			if rest, ok := strings.CutPrefix(name, r.prefix); ok {
				return r.base, r.repo + rest, true
			}
		}
		return nil, "", false
	}
	opts.Now = fx.clock.Now
	if opts.Login != nil && opts.Login.Host == "" {
		opts.Login = mustParse(t, fx.a.registry.URL+"/v2/")
	}
	fx.srv = httptest.NewServer(NewRelay(opts))
	t.Cleanup(fx.srv.Close)
	return fx
}

func (fx *relayFixture) get(t *testing.T, method, query, authorization string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, fx.srv.URL+"/v2/token?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// ociCode returns the code of an OCI error body, "" when the body is not one.
func ociCode(body string) string {
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) != 1 || e.Errors[0].Message == "" {
		return ""
	}
	return e.Errors[0].Code
}

func TestRelay(t *testing.T) {
	alice := "Basic " + b64("alice:pw")
	for _, tc := range []struct {
		name          string
		method, query string
		authorization string
		wantStatus    int
		wantCode      string      // the OCI error code, for refusals by the relay
		wantCalls     []tokenCall // token requests upstream a received
	}{
		{
			name: "scope rewritten", query: "service=oci-proxy&scope=repository:tools/lint:pull", wantStatus: http.StatusOK,
			wantCalls: []tokenCall{{Service: fakeService, Scopes: []string{"repository:acme/lint:pull"}}},
		},
		{
			name: "client Basic passed through", query: "scope=repository:tools/lint:pull", authorization: alice, wantStatus: http.StatusOK,
			wantCalls: []tokenCall{{User: "alice", Service: fakeService, Scopes: []string{"repository:acme/lint:pull"}, Auth: alice}},
		},
		{
			name: "several scopes, same registry", query: "scope=repository:tools/lint:pull&scope=repository:lib/alpine:pull", wantStatus: http.StatusOK,
			wantCalls: []tokenCall{{Service: fakeService, Scopes: []string{"repository:acme/lint:pull", "repository:library/alpine:pull"}}},
		},
		{
			name: "scopes separated by spaces", query: "scope=repository:tools/lint:pull+repository:tools/fmt:pull", wantStatus: http.StatusOK,
			wantCalls: []tokenCall{{Service: fakeService, Scopes: []string{"repository:acme/lint:pull", "repository:acme/fmt:pull"}}},
		},
		{
			name: "push dropped", query: "scope=repository:tools/lint:pull,push", wantStatus: http.StatusOK,
			wantCalls: []tokenCall{{Service: fakeService, Scopes: []string{"repository:acme/lint:pull"}}},
		},
		{
			name: "push-only scope dropped beside a pull", query: "scope=repository:tools/lint:push&scope=repository:tools/fmt:pull", wantStatus: http.StatusOK,
			wantCalls: []tokenCall{{Service: fakeService, Scopes: []string{"repository:acme/fmt:pull"}}},
		},
		{
			name: "duplicate scopes merged", query: "scope=repository:tools/lint:pull&scope=repository:tools/lint:pull,push", wantStatus: http.StatusOK,
			wantCalls: []tokenCall{{Service: fakeService, Scopes: []string{"repository:acme/lint:pull"}}},
		},
		{
			name: "other resource types dropped", query: "scope=registry:catalog:*&scope=repository:tools/lint:pull", wantStatus: http.StatusOK,
			wantCalls: []tokenCall{{Service: fakeService, Scopes: []string{"repository:acme/lint:pull"}}},
		},
		{name: "push only", query: "scope=repository:tools/lint:push", wantStatus: http.StatusForbidden, wantCode: codeDenied},
		{name: "unknown name", query: "scope=repository:nowhere/lint:pull", wantStatus: http.StatusNotFound, wantCode: codeNameUnknown},
		{name: "invalid name", query: "scope=repository:tools/Lint:pull", wantStatus: http.StatusBadRequest, wantCode: codeNameInvalid},
		{name: "dot segment", query: "scope=repository:tools/../etc:pull", wantStatus: http.StatusBadRequest, wantCode: codeNameInvalid},
		{name: "several upstreams", query: "scope=repository:tools/lint:pull&scope=repository:other/x:pull", wantStatus: http.StatusBadRequest, wantCode: codeUnsupported},
		{name: "no scope", query: "service=oci-proxy", wantStatus: http.StatusBadRequest, wantCode: codeUnsupported},
		{name: "only a catalog scope", query: "scope=registry:catalog:*", wantStatus: http.StatusBadRequest, wantCode: codeUnsupported},
		{name: "malformed scope", query: "scope=repository", wantStatus: http.StatusBadRequest, wantCode: codeUnsupported},
		{name: "too many scopes", query: strings.Repeat("scope=repository:tools/a:pull&", maxScopes+1), wantStatus: http.StatusBadRequest, wantCode: codeUnsupported},
		{name: "POST", method: http.MethodPost, query: "scope=repository:tools/lint:pull", wantStatus: http.StatusMethodNotAllowed, wantCode: codeUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newRelayFixture(t, func(f *fakeUpstream) { f.anonymous = true }, RelayOptions{})
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			resp, body := fx.get(t, method, tc.query, tc.authorization)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.wantStatus, body)
			}
			checkTokenHeaders(t, resp)
			if tc.wantCode != "" {
				if got := ociCode(body); got != tc.wantCode {
					t.Errorf("body %s, want an OCI error %s", body, tc.wantCode)
				}
			} else if !strings.Contains(body, `"token":"tok-`) {
				t.Errorf("body %s, want the upstream's token", body)
			}
			if d := cmp.Diff(tc.wantCalls, fx.a.tokenCalls()); d != "" {
				t.Errorf("token requests upstream (-want +got):\n%s", d)
			}
			if n := len(fx.b.tokenCalls()); n != 0 {
				t.Errorf("%d token requests to the other upstream", n)
			}
		})
	}
}

func checkTokenHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	for _, h := range []struct{ name, want string }{
		{"Content-Type", "application/json"},
		{"Cache-Control", "no-store"},
	} {
		if got := resp.Header.Get(h.name); got != h.want {
			t.Errorf("%s %q, want %q", h.name, got, h.want)
		}
	}
}

func TestRelayPassesUpstreamAnswers(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		body       string
		wantStatus int
		wantBody   string // "" means an OCI error with wantCode
		wantCode   string
	}{
		{"401 with JSON", http.StatusUnauthorized, `{"errors":[{"code":"UNAUTHORIZED","message":"bad"}]}`, http.StatusUnauthorized, `{"errors":[{"code":"UNAUTHORIZED","message":"bad"}]}`, ""},
		{"403 with JSON", http.StatusForbidden, `{"details":"no"}`, http.StatusForbidden, `{"details":"no"}`, ""},
		{"401 with HTML", http.StatusUnauthorized, `<html>no</html>`, http.StatusUnauthorized, "", codeUnauthorized},
		{"429 with text", http.StatusTooManyRequests, `slow down`, http.StatusTooManyRequests, "", codeTooManyRequests},
		{"503 with text", http.StatusServiceUnavailable, `down`, http.StatusServiceUnavailable, "", codeUnknown},
		{"200 not JSON", http.StatusOK, `token=abc`, http.StatusBadGateway, "", codeUnknown},
		{"302", http.StatusFound, ``, http.StatusBadGateway, "", codeUnknown},
		{"200 too large", http.StatusOK, `{"token":"` + strings.Repeat("a", maxTokenBody) + `"}`, http.StatusBadGateway, "", codeUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newRelayFixture(t, func(f *fakeUpstream) { f.tokenStatus, f.tokenBody = tc.status, tc.body }, RelayOptions{})
			resp, body := fx.get(t, http.MethodGet, "scope=repository:tools/lint:pull", "")
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.wantStatus, body)
			}
			checkTokenHeaders(t, resp)
			if tc.wantBody != "" {
				if body != tc.wantBody {
					t.Errorf("body %q, want the upstream's %q", body, tc.wantBody)
				}
			} else if got := ociCode(body); got != tc.wantCode {
				t.Errorf("body %q, want an OCI error %s", body, tc.wantCode)
			}
		})
	}
}

func TestRelayUpstreamDenialWithCredentials(t *testing.T) {
	fx := newRelayFixture(t, func(f *fakeUpstream) { f.anonymous = false }, RelayOptions{})
	resp, body := fx.get(t, http.MethodGet, "scope=repository:tools/lint:pull", "Basic "+b64("alice:wrong"))
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "bad credentials") {
		t.Fatalf("status %d %s, want the upstream's 401", resp.StatusCode, body)
	}
	resp, body = fx.get(t, http.MethodGet, "scope=repository:tools/lint:pull", "Basic "+b64("alice:pw"))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "tok-1-alice") {
		t.Fatalf("status %d %s, want alice's token", resp.StatusCode, body)
	}
}

func TestRelayHead(t *testing.T) {
	fx := newRelayFixture(t, nil, RelayOptions{})
	resp, body := fx.get(t, http.MethodHead, "scope=repository:tools/lint:pull", "")
	if resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD: %d %q", resp.StatusCode, body)
	}
}

func TestRelayRemembersChallenge(t *testing.T) {
	fx := newRelayFixture(t, nil, RelayOptions{ChallengeTTL: time.Minute})
	pings := func() int {
		fx.a.mu.Lock()
		defer fx.a.mu.Unlock()
		return fx.a.pings
	}
	for range 3 {
		fx.get(t, http.MethodGet, "scope=repository:tools/lint:pull", "")
	}
	if n := pings(); n != 1 {
		t.Errorf("%d pings for 3 token requests within the TTL, want 1", n)
	}
	fx.clock.Advance(time.Minute)
	fx.get(t, http.MethodGet, "scope=repository:tools/lint:pull", "")
	if n := pings(); n != 2 {
		t.Errorf("%d pings after the TTL, want 2", n)
	}
}

func TestRelayUpstreamFailures(t *testing.T) {
	for _, tc := range []struct {
		name      string
		configure func(f *fakeUpstream)
	}{
		{"token server hangs", func(f *fakeUpstream) { f.gate = make(chan struct{}) }},
		{"realm not http", func(f *fakeUpstream) { f.realm = "ftp://127.0.0.1/token" }},
		{"basic registry", func(f *fakeUpstream) { f.basic = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newRelayFixture(t, tc.configure, RelayOptions{Timeout: 50 * time.Millisecond})
			resp, body := fx.get(t, http.MethodGet, "scope=repository:tools/lint:pull", "")
			if resp.StatusCode != http.StatusBadGateway || ociCode(body) != codeUnknown {
				t.Errorf("status %d %s, want 502 UNKNOWN", resp.StatusCode, body)
			}
		})
	}
	t.Run("upstream down", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		base := mustParse(t, dead.URL+"/v2/")
		dead.Close()
		h := NewRelay(RelayOptions{MapScope: func(string) (*url.URL, string, bool) { return base, "x", true }})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/token?scope=repository:a/b:pull", nil))
		if rec.Code != http.StatusBadGateway {
			t.Errorf("status %d, want 502", rec.Code)
		}
	})
	t.Run("no MapScope", func(t *testing.T) {
		rec := httptest.NewRecorder()
		NewRelay(RelayOptions{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/token?scope=repository:a/b:pull", nil))
		if rec.Code != http.StatusNotFound || ociCode(rec.Body.String()) != codeNameUnknown {
			t.Errorf("status %d %s, want 404 NAME_UNKNOWN", rec.Code, rec.Body)
		}
	})
}

// A request with no scope at all is a login: relayed to the Login registry when one is set, with
// the client's credentials and no scope, and refused without one (TestRelay's "no scope").
func TestRelayLogin(t *testing.T) {
	alice := "Basic " + b64("alice:pw")
	fx := newRelayFixture(t, nil, RelayOptions{})
	refused, _ := fx.get(t, http.MethodGet, "service=oci-proxy&account=alice", alice)
	if refused.StatusCode != http.StatusBadRequest {
		t.Fatalf("login without a Login registry: status %d, want 400", refused.StatusCode)
	}
	fx = newRelayFixture(t, nil, RelayOptions{Login: &url.URL{}})
	resp, body := fx.get(t, http.MethodGet, "service=oci-proxy&account=alice", alice)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"token":"tok-`) {
		t.Fatalf("login: status %d, body %s", resp.StatusCode, body)
	}
	want := []tokenCall{{User: "alice", Service: fakeService, Auth: alice}}
	if d := cmp.Diff(want, fx.a.tokenCalls()); d != "" {
		t.Errorf("token requests upstream (-want +got):\n%s", d)
	}
	bad, _ := fx.get(t, http.MethodGet, "service=oci-proxy", "Basic "+b64("alice:wrong"))
	if bad.StatusCode != http.StatusUnauthorized {
		t.Errorf("login with a wrong password: status %d, want the upstream's 401", bad.StatusCode)
	}
}
