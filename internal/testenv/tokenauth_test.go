package testenv

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func basicHeader(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestTokenAuthServer(t *testing.T) {
	ts := StartTokenServer(t, TokenServerOptions{
		Users:  map[string]string{"alice": "secret"},
		Public: []string{"public/"},
		TTL:    2 * time.Minute,
	})
	alice := basicHeader("alice", "secret")
	pusher := basicHeader(PushUser, ts.Pusher.Password)
	const svc = "service=test-registry"
	repo := func(name string, actions ...string) tokenAccess {
		return tokenAccess{Type: "repository", Name: name, Actions: append([]string{}, actions...)}
	}
	for _, tc := range []struct {
		name       string
		method     string // "" means GET
		path       string // "" means /token
		auth       string // the Authorization header; none when ""
		query      string
		wantStatus int
		wantCode   string // of the error, when wantStatus is not 200
		wantSub    string
		wantAccess []tokenAccess
	}{
		{name: "anonymous pulls public", query: svc + "&scope=repository:public/app:pull",
			wantStatus: 200, wantAccess: []tokenAccess{repo("public/app", "pull")}},
		{name: "anonymous gets nothing on private", query: svc + "&scope=repository:private/app:pull",
			wantStatus: 200, wantAccess: []tokenAccess{repo("private/app")}},
		{name: "anonymous may not push public", query: svc + "&scope=repository:public/app:push,pull",
			wantStatus: 200, wantAccess: []tokenAccess{repo("public/app", "pull")}},
		{name: "publicity/ is not under public/", query: svc + "&scope=repository:publicity/app:pull",
			wantStatus: 200, wantAccess: []tokenAccess{repo("publicity/app")}},
		{name: "user pulls private but may not push", auth: alice, query: svc + "&account=alice&scope=repository:private/app:pull,push",
			wantStatus: 200, wantSub: "alice", wantAccess: []tokenAccess{repo("private/app", "pull")}},
		{name: "pusher pushes", auth: pusher, query: svc + "&scope=repository:private/app:push,pull",
			wantStatus: 200, wantSub: PushUser, wantAccess: []tokenAccess{repo("private/app", "push", "pull")}},
		{name: "several scopes, in parameters and space-separated",
			query:      svc + "&scope=repository:public/a:pull&scope=repository:private/b:pull+repository:public/c:pull",
			wantStatus: 200, wantAccess: []tokenAccess{repo("public/a", "pull"), repo("private/b"), repo("public/c", "pull")}},
		{name: "no registry-wide access", auth: alice, query: svc + "&scope=registry:catalog:*",
			wantStatus: 200, wantSub: "alice", wantAccess: []tokenAccess{{Type: "registry", Name: "catalog", Actions: []string{}}}},
		{name: "login without scope", auth: alice, query: svc,
			wantStatus: 200, wantSub: "alice", wantAccess: []tokenAccess{}},

		{name: "wrong password", auth: basicHeader("alice", "wrong"), query: svc + "&scope=repository:public/app:pull",
			wantStatus: 401, wantCode: "UNAUTHORIZED"},
		{name: "unknown user", auth: basicHeader("bob", "secret"), query: svc,
			wantStatus: 401, wantCode: "UNAUTHORIZED"},
		{name: "not Basic", auth: "Bearer abc", query: svc,
			wantStatus: 401, wantCode: "UNAUTHORIZED"},
		{name: "other service", query: "service=ghcr.io&scope=repository:public/app:pull",
			wantStatus: 400, wantCode: "UNSUPPORTED"},
		{name: "no service", query: "scope=repository:public/app:pull",
			wantStatus: 400, wantCode: "UNSUPPORTED"},
		{name: "scope without actions", query: svc + "&scope=repository:public/app",
			wantStatus: 400, wantCode: "UNSUPPORTED"},
		{name: "scope with empty actions", query: svc + "&scope=repository:public/app:",
			wantStatus: 400, wantCode: "UNSUPPORTED"},
		{name: "too many scopes", query: svc + strings.Repeat("&scope=repository:public/app:pull", maxTokenScopes+1),
			wantStatus: 400, wantCode: "UNSUPPORTED"},
		{name: "POST", method: http.MethodPost, query: svc,
			wantStatus: 405, wantCode: "UNSUPPORTED"},
		{name: "other path", path: "/v2/token", query: svc,
			wantStatus: 404, wantCode: "UNSUPPORTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, path := http.MethodGet, "/token"
			if tc.method != "" {
				method = tc.method
			}
			if tc.path != "" {
				path = tc.path
			}
			u := strings.TrimSuffix(ts.URL, "/token") + path + "?" + tc.query
			h := http.Header{}
			if tc.auth != "" {
				h.Set("Authorization", tc.auth)
			}
			ans := Send(t, NoRedirectClient(t, ""), NewRequest(t, method, u, h))
			if ans.Status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", ans.Status, tc.wantStatus, ans.Body)
			}
			if ct := ans.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			reqs := ts.Requests()
			last := reqs[len(reqs)-1]
			if last.Status != tc.wantStatus || last.Auth != (tc.auth != "") {
				t.Errorf("recorded %+v", last)
			}
			if strings.Contains(fmt.Sprintf("%#v", reqs), "secret") {
				t.Errorf("a password was recorded: %+v", reqs)
			}
			if tc.wantStatus != http.StatusOK {
				var body struct {
					Errors []struct{ Code, Message string }
				}
				if err := json.Unmarshal(ans.Body, &body); err != nil || len(body.Errors) != 1 || body.Errors[0].Code != tc.wantCode {
					t.Errorf("body %s (%v), want one error %s", ans.Body, err, tc.wantCode)
				}
				return
			}
			var resp tokenResponse
			if err := json.Unmarshal(ans.Body, &resp); err != nil {
				t.Fatalf("body %s: %v", ans.Body, err)
			}
			if resp.AccessToken != resp.Token || resp.ExpiresIn != 120 {
				t.Errorf("access_token differs from token, or expires_in %d is not 120", resp.ExpiresIn)
			}
			issued, err := time.Parse(time.RFC3339, resp.IssuedAt)
			if err != nil {
				t.Errorf("issued_at: %v", err)
			}
			c := verifyToken(t, ts.CertFile, resp.Token)
			if c.Issuer != ts.Issuer || c.Audience != ts.Service || c.Subject != tc.wantSub {
				t.Errorf("iss %q aud %q sub %q, want %q %q %q", c.Issuer, c.Audience, c.Subject, ts.Issuer, ts.Service, tc.wantSub)
			}
			if c.IssuedAt != issued.Unix() || c.NotBefore > c.IssuedAt || c.Expiry != c.IssuedAt+120 || c.ID == "" {
				t.Errorf("times or jti: %+v (issued_at %s)", c, resp.IssuedAt)
			}
			if d := cmp.Diff(tc.wantAccess, c.Access); d != "" {
				t.Errorf("access (-want +got):\n%s", d)
			}
		})
	}
}

// verifyToken checks the JWS as the registry does, with the certificate in certFile (which must
// also be the one in the header), and returns its claims.
func verifyToken(t testing.TB, certFile, token string) tokenClaims {
	t.Helper()
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		t.Fatalf("%s holds no PEM", certFile)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a JWS", token)
	}
	var h tokenHeader
	var c tokenClaims
	for i, v := range []any{&h, &c} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("token part %d: %v", i, err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("token part %d: %v", i, err)
		}
	}
	if h.Alg != "RS256" || len(h.X5c) != 1 || h.X5c[0] != base64.StdEncoding.EncodeToString(cert.Raw) {
		t.Fatalf("header %+v does not carry the certificate of %s", h, certFile)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("signature: %v", err)
	}
	return c
}

// startTokenUpstream starts a token server, where alice's password is "secret", and its
// registry holding public/app:1.0 and private/app:1.0, which it returns by repository.
func startTokenUpstream(t *testing.T) (*TokenServer, *Registry, map[string]Image) {
	t.Helper()
	ts := StartTokenServer(t, TokenServerOptions{Users: map[string]string{"alice": "secret"}, Public: []string{"public/"}})
	r := StartTokenRegistry(t, ts, RegistryOptions{})
	images := map[string]Image{}
	for _, repo := range []string{"public/app", "private/app"} {
		images[repo] = r.PushOCIImage(t, repo+":1.0")
	}
	return ts, r, images
}

func TestTokenAuthRegistry(t *testing.T) {
	ts, r, images := startTokenUpstream(t)
	req := func(scope, user string, status int) TokenRequest {
		return TokenRequest{Method: http.MethodGet, Path: "/token", Service: ts.Service, Scopes: []string{scope},
			User: user, Auth: user != "", Status: status}
	}
	pushes := []TokenRequest{
		req("repository:public/app:push,pull", PushUser, 200),
		req("repository:private/app:push,pull", PushUser, 200),
	}
	if d := cmp.Diff(pushes, ts.Requests()); d != "" {
		t.Errorf("token requests of the pushes (-want +got):\n%s", d)
	}
	tokenHost := strings.TrimPrefix(strings.TrimSuffix(ts.URL, "/token"), "http://")
	alice := &authn.Basic{Username: "alice", Password: "secret"}
	// pull reads and verifies every blob of the image and returns its digest.
	pull := func(s string, auth authn.Authenticator) (string, error) {
		ref, err := name.ParseReference(s, name.Insecure)
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), PullTimeout)
		defer cancel()
		img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithAuth(auth))
		if err != nil {
			return "", err
		}
		d, err := img.Digest()
		if err != nil {
			return "", err
		}
		return d.String(), validate.Image(img)
	}
	for _, tc := range []struct {
		name     string
		repo     string
		auth     authn.Authenticator
		wantFrom string // the host that refuses with 401; "" when the pull works
		wantReq  TokenRequest
	}{
		{name: "anonymous, public", repo: "public/app", auth: authn.Anonymous,
			wantReq: req("repository:public/app:pull", "", 200)},
		{name: "anonymous, private", repo: "private/app", auth: authn.Anonymous, wantFrom: r.Host,
			wantReq: req("repository:private/app:pull", "", 200)},
		{name: "user, private", repo: "private/app", auth: alice,
			wantReq: req("repository:private/app:pull", "alice", 200)},
		{name: "user, public", repo: "public/app", auth: alice,
			wantReq: req("repository:public/app:pull", "alice", 200)},
		{name: "wrong password", repo: "public/app", auth: &authn.Basic{Username: "alice", Password: "wrong"}, wantFrom: tokenHost,
			wantReq: req("repository:public/app:pull", "alice", 401)},
		{name: "pusher, private", repo: "private/app", auth: ts.Pusher,
			wantReq: req("repository:private/app:pull", PushUser, 200)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ts.Requests())
			digest, err := pull(r.Ref(tc.repo+":1.0"), tc.auth)
			var terr *transport.Error
			switch {
			case tc.wantFrom == "" && err != nil:
				t.Fatalf("pull: %v", err)
			case tc.wantFrom == "":
				if want := images[tc.repo].Digest; digest != want {
					t.Errorf("pulled %s, pushed %s", digest, want)
				}
			case !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized || terr.Request == nil ||
				terr.Request.URL.Host != tc.wantFrom || len(terr.Errors) == 0 || terr.Errors[0].Code != transport.UnauthorizedErrorCode:
				t.Fatalf("pull: %v; want 401 UNAUTHORIZED from %s", err, tc.wantFrom)
			}
			// One token per pull: the client reuses it for the manifest and every blob; refused
			// by the registry, it asks for a fresh one once and tries again.
			n := 1
			if tc.wantFrom == r.Host {
				n = 2
			}
			if d := cmp.Diff(slices.Repeat([]TokenRequest{tc.wantReq}, n), ts.Requests()[before:]); d != "" {
				t.Errorf("token requests (-want +got):\n%s", d)
			}
		})
	}
}

func TestTokenAuthChallenge(t *testing.T) {
	ts, r, images := startTokenUpstream(t)
	c := NoRedirectClient(t, "")
	manifest := r.URL + "/v2/private/app/manifests/1.0"
	token := func(ts *TokenServer, auth string) string {
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		ans := Send(t, c, NewRequest(t, http.MethodGet, ts.URL+"?service="+ts.Service+"&scope=repository:private/app:pull", h))
		var resp tokenResponse
		if ans.Status != http.StatusOK || json.Unmarshal(ans.Body, &resp) != nil {
			t.Fatalf("token: %d %s", ans.Status, ans.Body)
		}
		return resp.Token
	}
	// Same service and issuer, another key: the registry must tell its tokens apart.
	forger := StartTokenServer(t, TokenServerOptions{Users: map[string]string{"alice": "secret"}})

	challenge := fmt.Sprintf("Bearer realm=%q,service=%q", ts.URL, ts.Service)
	scoped := challenge + `,scope="repository:private/app:pull"`
	for _, tc := range []struct {
		name          string
		url           string
		token         string
		wantStatus    int
		wantChallenge string
	}{
		{name: "base without token", url: r.URL + "/v2/", wantStatus: 401, wantChallenge: challenge},
		{name: "manifest without token", url: manifest, wantStatus: 401, wantChallenge: scoped},
		{name: "anonymous token", url: manifest, token: token(ts, ""), wantStatus: 401,
			wantChallenge: scoped + `,error="insufficient_scope"`},
		{name: "forged token", url: manifest, token: token(forger, basicHeader("alice", "secret")), wantStatus: 401,
			wantChallenge: scoped + `,error="invalid_token"`},
		{name: "garbage token", url: manifest, token: "abc", wantStatus: 401,
			wantChallenge: scoped + `,error="invalid_token"`},
		{name: "user's token", url: manifest, token: token(ts, basicHeader("alice", "secret")), wantStatus: 200},
		{name: "base with anonymous token", url: r.URL + "/v2/", token: token(ts, ""), wantStatus: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}
			if tc.token != "" {
				h.Set("Authorization", "Bearer "+tc.token)
			}
			ans := Send(t, c, NewRequest(t, http.MethodGet, tc.url, h))
			if ans.Status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", ans.Status, tc.wantStatus, ans.Body)
			}
			if got := ans.Header.Get("WWW-Authenticate"); got != tc.wantChallenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.wantChallenge)
			}
			if tc.wantStatus == http.StatusUnauthorized && !strings.Contains(string(ans.Body), `"code":"UNAUTHORIZED"`) {
				t.Errorf("body %s", ans.Body)
			}
			if tc.wantStatus == http.StatusOK && tc.url == manifest && ans.Header.Get("Docker-Content-Digest") != images["private/app"].Digest {
				t.Errorf("Docker-Content-Digest %q, want %q", ans.Header.Get("Docker-Content-Digest"), images["private/app"].Digest)
			}
		})
	}
}
