package testenv

// An upstream that authenticates the way GHCR and Docker Hub do, after the distribution token
// specification: the registry answers 401 with a Bearer challenge naming a realm; the client asks
// the realm for a JWT covering the scopes it needs (with Basic credentials, or none) and retries
// with it; the registry checks the JWT against a certificate it trusts and the access it grants.

import (
	"cmp"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// PushUser is the account name of TokenServer.Pusher.
const PushUser = "testenv-pusher"

// maxTokenScopes bounds the scopes of one token request: clients ask for one or two (a pull, or a
// push plus the pull of a blob's source repository), so more is a client bug, not a load to bear.
const maxTokenScopes = 16

// TokenServerOptions configure StartTokenServer. The zero value issues tokens for service
// "test-registry", valid for 5 minutes, to anonymous clients and the pusher only, and makes no
// repository public.
type TokenServerOptions struct {
	// Service is the registry's name: the audience of the tokens, and the service parameter a
	// request must carry. "" means "test-registry".
	Service string
	// Issuer is the tokens' iss, which the registry must trust; "" means "oci-proxy-test".
	Issuer string
	// Users are the Basic credentials accepted (user → password). Each may pull every repository
	// and push none. It must not name PushUser.
	Users map[string]string
	// Public are repository name prefixes ("public/") that anyone, anonymous included, may pull;
	// none when empty.
	Public []string
	// TTL is how long a token is valid (expires_in); 0 means 5 minutes.
	TTL time.Duration
}

// TokenServer is a running token server, the realm of a registry started by StartTokenRegistry.
//
// Like Docker Hub's and GHCR's, it refuses only bad credentials and malformed requests: a scope
// the client may not have is answered with a token granting no action on it, and the registry is
// what then refuses the request (401, error="insufficient_scope").
type TokenServer struct {
	URL      string // the realm, "http://localhost:PORT/token" (crane refuses a realm on a loopback IP literal)
	Service  string
	Issuer   string
	CertFile string // PEM of the self-signed certificate of the signing key: the registry's rootcertbundle
	// Pusher may pull and push every repository: the account a registry's Push helpers use.
	Pusher *authn.Basic

	users  map[string]string // with the pusher
	public []string
	ttl    time.Duration
	key    *rsa.PrivateKey
	x5c    []string // the certificate, as the tokens' header carries it

	mu   sync.Mutex
	reqs []TokenRequest
}

// TokenRequest is one request the token server answered. It never holds a password.
type TokenRequest struct {
	Method  string
	Path    string
	Service string
	Account string
	// Scopes are as sent, in order, one per element ("repository:public/app:pull"), whether they
	// came in several scope parameters or space-separated in one.
	Scopes []string
	// User is the user name of the Basic credentials, "" if none came.
	User string
	// Auth tells whether the request carried an Authorization header at all.
	Auth bool
	// Status is what the token server answered.
	Status int
}

// tokenAccess is one entry of a token's access claim.
type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

type tokenClaims struct {
	Issuer    string        `json:"iss"`
	Subject   string        `json:"sub"`
	Audience  string        `json:"aud"`
	Expiry    int64         `json:"exp"`
	NotBefore int64         `json:"nbf"`
	IssuedAt  int64         `json:"iat"`
	ID        string        `json:"jti"`
	Access    []tokenAccess `json:"access"`
}

type tokenHeader struct {
	Alg string   `json:"alg"`
	Typ string   `json:"typ"`
	X5c []string `json:"x5c"`
}

type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// StartTokenServer generates a signing key and its certificate and serves tokens on 127.0.0.1
// (the address localhost names) until the test ends.
func StartTokenServer(t testing.TB, opts TokenServerOptions) *TokenServer {
	t.Helper()
	if _, ok := opts.Users[PushUser]; ok {
		t.Fatalf("token server: user %q is reserved for the pusher", PushUser)
	}
	ts := &TokenServer{
		Service: cmp.Or(opts.Service, "test-registry"),
		Issuer:  cmp.Or(opts.Issuer, "oci-proxy-test"),
		users:   map[string]string{PushUser: rand.Text()},
		public:  slices.Clone(opts.Public),
		ttl:     cmp.Or(opts.TTL, 5*time.Minute),
	}
	maps.Copy(ts.users, opts.Users)
	ts.Pusher = &authn.Basic{Username: PushUser, Password: ts.users[PushUser]}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ts.key = key
	now := time.Now()
	tmpl := &x509.Certificate{
		// A nil SerialNumber: CreateCertificate picks a random one.
		Subject:   pkix.Name{CommonName: "oci-proxy test token signer"},
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(24 * time.Hour),
		// distribution accepts a token's certificate only if it may sign; being in the bundle
		// itself, it needs to be no CA.
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("token signing certificate: %v", err)
	}
	ts.x5c = []string{base64.StdEncoding.EncodeToString(der)}
	ts.CertFile = filepath.Join(t.TempDir(), "token-signer.pem")
	if err := os.WriteFile(ts.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("token server: %v", err)
	}
	ts.URL = "http://localhost:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/token"
	serve(t, ln, http.HandlerFunc(ts.serveHTTP))
	return ts
}

// Requests returns the requests answered so far, oldest first.
func (ts *TokenServer) Requests() []TokenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.reqs)
}

func (ts *TokenServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rec := TokenRequest{
		Method:  r.Method,
		Path:    r.URL.Path,
		Service: q.Get("service"),
		Account: q.Get("account"),
		Auth:    r.Header.Get("Authorization") != "",
	}
	for _, s := range q["scope"] {
		rec.Scopes = append(rec.Scopes, strings.Fields(s)...)
	}
	user, pass, basic := r.BasicAuth()
	rec.User = user
	status, body := ts.answer(r, rec, pass, basic)
	rec.Status = status
	// Recorded before answering, so a client holding the answer finds its request in Requests.
	ts.mu.Lock()
	ts.reqs = append(ts.reqs, rec)
	ts.mu.Unlock()
	if status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodGet)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// An error here is the client's connection failing; there is no one left to tell.
	_ = json.NewEncoder(w).Encode(body)
}

// answer returns the status and JSON body of the answer to the request rec describes.
func (ts *TokenServer) answer(r *http.Request, rec TokenRequest, pass string, basic bool) (int, any) {
	switch {
	case rec.Path != "/token":
		return tokenError(http.StatusNotFound, "UNSUPPORTED", "no such endpoint")
	case r.Method != http.MethodGet:
		// The OAuth2 POST form is optional in the specification; docker and containerd fall back
		// to GET when it is refused.
		return tokenError(http.StatusMethodNotAllowed, "UNSUPPORTED", "only GET is served")
	}
	if rec.Auth {
		want, known := ts.users[rec.User]
		if !basic || !known || subtle.ConstantTimeCompare([]byte(pass), []byte(want)) != 1 {
			return tokenError(http.StatusUnauthorized, "UNAUTHORIZED", "incorrect username or password")
		}
	}
	if rec.Service != ts.Service {
		return tokenError(http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("service %q is not %q", rec.Service, ts.Service))
	}
	if len(rec.Scopes) > maxTokenScopes {
		return tokenError(http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("%d scopes, more than %d", len(rec.Scopes), maxTokenScopes))
	}
	access := []tokenAccess{}
	for _, s := range rec.Scopes {
		a, ok := parseTokenScope(s)
		if !ok {
			return tokenError(http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("scope %q is not TYPE:NAME:ACTIONS", s))
		}
		a.Actions = ts.grant(rec.User, a)
		access = append(access, a)
	}
	now := time.Now()
	token, err := ts.sign(tokenClaims{
		Issuer:    ts.Issuer,
		Subject:   rec.User,
		Audience:  ts.Service,
		Expiry:    now.Add(ts.ttl).Unix(),
		NotBefore: now.Unix(),
		IssuedAt:  now.Unix(),
		ID:        rand.Text(),
		Access:    access,
	})
	if err != nil {
		return tokenError(http.StatusInternalServerError, "UNKNOWN", "cannot sign the token")
	}
	return http.StatusOK, tokenResponse{
		Token:       token,
		AccessToken: token,
		ExpiresIn:   int(ts.ttl / time.Second),
		IssuedAt:    now.UTC().Format(time.RFC3339),
	}
}

// parseTokenScope parses "TYPE:NAME:ACTION,ACTION". The name is what lies between the first and the
// last colon, so a type with a class ("repository(plugin)") and a name with a colon both parse.
func parseTokenScope(s string) (tokenAccess, bool) {
	typ, rest, ok := strings.Cut(s, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || typ == "" || i <= 0 || i == len(rest)-1 {
		return tokenAccess{}, false
	}
	return tokenAccess{Type: typ, Name: rest[:i], Actions: strings.Split(rest[i+1:], ",")}, true
}

// grant returns the actions of a that user ("" for anonymous, already authenticated otherwise)
// may have, in the order asked, never nil: the pusher anything on a repository, other users
// pull, and anyone pull on a public repository.
func (ts *TokenServer) grant(user string, a tokenAccess) []string {
	out := []string{}
	if a.Type != "repository" {
		return out
	}
	public := slices.ContainsFunc(ts.public, func(p string) bool { return strings.HasPrefix(a.Name, p) })
	for _, act := range a.Actions {
		if user == PushUser || act == "pull" && (user != "" || public) {
			out = append(out, act)
		}
	}
	return out
}

// sign returns the RS256 JWS of c, its header carrying the certificate.
func (ts *TokenServer) sign(c tokenClaims) (string, error) {
	h, err := json.Marshal(tokenHeader{Alg: "RS256", Typ: "JWT", X5c: ts.x5c})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	sum := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, ts.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// tokenErrors is the {"errors":[...]} body registries and token servers answer with.
type tokenErrors struct {
	Errors []tokenErrorDetail `json:"errors"`
}

type tokenErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func tokenError(status int, code, msg string) (int, any) {
	return status, tokenErrors{[]tokenErrorDetail{{code, msg}}}
}

// StartTokenRegistry starts `docker-registry serve` trusting only tokens of ts, as GHCR does, and
// waits until /v2/ answers (401 without a token). Its Auth is ts.Pusher, so Push and the other
// helpers work as on StartRegistry's registries. opts.Users and opts.Notify are refused: the
// users are the token server's, and notifications are StartRegistry's.
func StartTokenRegistry(t testing.TB, ts *TokenServer, opts RegistryOptions) *Registry {
	t.Helper()
	if len(opts.Users) > 0 || len(opts.Notify) > 0 {
		t.Fatal("StartTokenRegistry: Users and Notify are not supported; give users to StartTokenServer")
	}
	bin := Need(t, "docker-registry", "apt-get install -y docker-registry")
	dir := t.TempDir()
	r := &Registry{Host: Addr(t, cmp.Or(opts.Host, "127.0.0.2")), Dir: filepath.Join(dir, "storage"), Auth: ts.Pusher}
	r.URL = "http://" + r.Host
	// JSON is YAML; the settings other than auth are StartRegistry's, for the same reasons.
	cfg := map[string]any{
		"version": "0.1",
		"log":     map[string]any{"level": "info", "formatter": "text"},
		"storage": map[string]any{
			"filesystem":  map[string]any{"rootdirectory": r.Dir},
			"delete":      map[string]any{"enabled": true},
			"maintenance": map[string]any{"uploadpurging": map[string]any{"enabled": false}},
		},
		"http": map[string]any{"addr": r.Host, "secret": "oci-proxy-test"},
		"auth": map[string]any{"token": map[string]any{
			"realm":          ts.URL,
			"service":        ts.Service,
			"issuer":         ts.Issuer,
			"rootcertbundle": ts.CertFile,
		}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("registry config: %v", err)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r.Proc = Start(t, "docker-registry "+r.Host, nil, bin, "serve", cfgPath)
	WaitHTTP(t, r.Proc, r.URL+"/v2/")
	return r
}
