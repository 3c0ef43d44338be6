package auth

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Distinctive values, so that finding one anywhere is certain to be a leak.
const (
	leakPassword = "s3cr3t-Pa55w0rd-xyz"
	leakToken    = "t0k3n-Zq9-distinctive-QWERTY"
)

// secretForms are the ways the secrets could show up: as they are, in an Authorization
// header, or JSON-escaped.
var secretForms = []string{
	leakPassword,
	leakToken,
	b64("alice:" + leakPassword),
	b64(leakPassword),
}

// printed is every fmt form of v.
func printed(v any) string {
	var b strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%q"} {
		fmt.Fprintf(&b, verb+"\n", v)
	}
	return b.String()
}

func TestSecretsNeverShow(t *testing.T) {
	log, logs := logBuffer()
	var seen []string // error strings and printed values, checked at the end
	record := func(what string, err error) {
		if err != nil {
			seen = append(seen, what+": "+err.Error())
		}
	}

	// A transport that fetched a token with the password and caches it.
	f := newFakeUpstream(t, func(f *fakeUpstream) {
		f.users["alice"] = leakPassword
		f.anonymous = false
		f.fixedToken = leakToken
	})
	creds := Static("alice", leakPassword)
	tr := NewTransport(nil, creds, TransportOptions{Logger: log})
	c := &http.Client{Transport: tr}
	ctx := WithScope(context.Background(), "repository:acme/app:pull")
	if code, _, _ := get(t, ctx, c, f.registry.URL+"/v2/acme/app/manifests/1"); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if !strings.HasSuffix(f.registryAuth()[1], leakToken) {
		t.Fatalf("the registry did not get the distinctive token: the test checks nothing")
	}
	clientCtx := WithClientToken(ctx, "Bearer "+leakToken)
	// A caller's struct holding them in unexported fields, which fmt prints without asking them.
	type holder struct {
		creds Credentials
		ctx   context.Context
	}
	h := holder{creds, clientCtx}
	seen = append(seen, printed(creds), printed(tr), printed(clientCtx), printed(newSecret(leakToken)), printed(h), printed(&h))
	log.Info("values", "creds", creds, "transport", tr, "ctx", clientCtx, "secret", newSecret(leakToken), "holder", h)

	// Token endpoints failing with the secrets in their answers.
	for _, body := range []string{
		`{"token":"` + leakToken + `"`, // cut short
		`{"token":` + leakToken + `}`,  // not JSON
		`{"token":"` + leakToken + `","expires_in":"soon"}`,
		`{"token":"` + leakToken + strings.Repeat("x", maxTokenBody) + `"}`,
		`{"token":"` + leakToken + "\r\n" + `"}`,
	} {
		g := newFakeUpstream(t, func(f *fakeUpstream) { f.tokenStatus, f.tokenBody = http.StatusOK, body })
		_, err := (&http.Client{Transport: NewTransport(nil, creds, TransportOptions{Logger: log})}).Get(g.registry.URL + "/v2/acme/app/manifests/1")
		if err == nil {
			t.Fatalf("token answer %.40q accepted", body)
		}
		record("token answer", err)
	}
	for _, status := range []int{http.StatusUnauthorized, http.StatusInternalServerError} {
		g := newFakeUpstream(t, func(f *fakeUpstream) { f.tokenStatus, f.tokenBody = status, leakPassword+" "+leakToken })
		_, err := (&http.Client{Transport: NewTransport(nil, creds, TransportOptions{Logger: log})}).Get(g.registry.URL + "/v2/acme/app/manifests/1")
		record("token status", err)
	}
	g := newFakeUpstream(t, func(f *fakeUpstream) { f.gate = make(chan struct{}) })
	_, err := (&http.Client{Transport: NewTransport(nil, creds, TransportOptions{Logger: log, TokenTimeout: 20 * time.Millisecond})}).Get(g.registry.URL + "/v2/acme/app/manifests/1")
	record("token timeout", err)

	// The relay, with a client's own credentials and the upstream's token.
	fx := newRelayFixture(t, func(f *fakeUpstream) {
		f.users["alice"] = leakPassword
		f.fixedToken = leakToken
	}, RelayOptions{Logger: log})
	resp, body := fx.get(t, http.MethodGet, "scope=repository:tools/lint:pull", "Basic "+b64("alice:"+leakPassword))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, leakToken) {
		t.Fatalf("relay: %d %s, want the token relayed", resp.StatusCode, body)
	}
	hang := newRelayFixture(t, func(f *fakeUpstream) { f.gate = make(chan struct{}) }, RelayOptions{Logger: log, Timeout: 20 * time.Millisecond})
	hang.get(t, http.MethodGet, "scope=repository:tools/lint:pull", "Basic "+b64("alice:"+leakPassword))
	bad := newRelayFixture(t, func(f *fakeUpstream) { f.tokenStatus, f.tokenBody = http.StatusOK, leakToken }, RelayOptions{Logger: log})
	if resp, body := bad.get(t, http.MethodGet, "scope=repository:tools/lint:pull", ""); strings.Contains(body, leakToken) {
		t.Errorf("relay answered %d %s, a body that is not JSON", resp.StatusCode, body)
	}

	// Credentials read from files.
	dir := t.TempDir()
	for name, content := range map[string]string{
		"two-lines": leakPassword + "\n" + leakPassword + "\n",
		"large":     strings.Repeat(leakPassword, maxPasswordFile),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := FromFiles("alice", path)
		record("password file", err)
	}
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(leakPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, err := FromFiles("alice", pwFile)
	if err != nil {
		t.Fatal(err)
	}
	seen = append(seen, printed(fromFile))
	log.Info("values", "creds", fromFile)

	for _, config := range []string{
		`{"auths":{"ghcr.io":{"auth":"` + b64("alice:"+leakPassword) + `"}}}`,
		`{"auths":{"ghcr.io":{"username":"alice","password":"` + leakPassword + `"}}}`,
		`{"auths":{"ghcr.io":{"auth":"` + b64(leakPassword) + `"}}}`, // no colon
		`{"auths":{"ghcr.io":{"password":"` + leakPassword + `"}`,    // cut short
		`{"auths":{"ghcr.io":{"password":"` + leakPassword + `"x}}}`,
		`{"auths":{"ghcr.io":{"password":` + leakPassword + `}}}`,
		`{"auths":{"ghcr.io":{"identitytoken":"` + leakToken + `"}}}`,
	} {
		dc, err := DockerConfig(writeConfig(t, config))
		record("docker config", err)
		if err != nil {
			continue
		}
		_, _, _, err = dc.Basic(context.Background(), "ghcr.io")
		record("docker config basic", err)
		seen = append(seen, printed(dc))
		log.Info("values", "creds", dc)
		// What a caller would print when a request fails.
		_, err = (&http.Client{Transport: NewTransport(nil, dc, TransportOptions{Logger: log})}).Get(f.registry.URL + "/v2/acme/app/manifests/1")
		record("docker config request", err)
	}

	all := strings.Join(seen, "\n") + "\n" + logs.String()
	for _, s := range secretForms {
		if i := strings.Index(all, s); i >= 0 {
			start, end := max(i-200, 0), min(i+len(s)+50, len(all))
			t.Errorf("secret %q shows:\n...%s...", s, all[start:end])
		}
	}
	if !strings.Contains(logs.String(), "token fetched") || !strings.Contains(logs.String(), "token relayed") {
		t.Errorf("the logs lack the records this test means to check:\n%s", logs)
	}
}

func TestSecretLogValue(t *testing.T) {
	log, logs := logBuffer()
	log.LogAttrs(context.Background(), slog.LevelInfo, "x",
		slog.Any("static", Static("alice", leakPassword)),
		slog.Any("secret", newSecret(leakPassword)))
	if strings.Contains(logs.String(), leakPassword) {
		t.Errorf("log shows the password: %s", logs)
	}
	if !strings.Contains(logs.String(), "alice") {
		t.Errorf("log lacks the username, which is no secret: %s", logs)
	}
}
