package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
)

const (
	defaultMaxEntries   = 1024
	defaultTokenTimeout = 10 * time.Second
	maxMargin           = 30 * time.Second
	// What a registry asked for is remembered per host, so that the next request carries a
	// token (or Basic credentials) at once instead of collecting a 401 first. A transport talks
	// to one registry, so a handful of hosts is plenty; an hour bounds how long a changed realm
	// costs (nothing but a 401 round trip, after which the new one is remembered).
	maxHosts = 64
	hostTTL  = time.Hour
)

// TransportOptions configure a Transport. The zero value is usable.
type TransportOptions struct {
	// Now is the clock token lifetimes are measured with; nil means time.Now.
	Now func() time.Time
	// Logger receives token fetches (debug), refusals (debug when anonymous, warn when
	// credentials were presented) and token endpoint failures (warn); nil discards. No record
	// holds a password, a token or an Authorization header.
	Logger *slog.Logger
	// Margin is how long before its expiry a token stops being used, so that it does not expire
	// on the way. Zero means a tenth of its lifetime, at most 30 s (6 s for a 60 s token);
	// negative means none.
	Margin time.Duration
	// MaxEntries bounds the cached tokens, one per realm, service, scope and credentials;
	// zero means 1024.
	MaxEntries int
	// TokenTimeout bounds one token request and one Ping; zero means 10 s.
	TokenTimeout time.Duration
}

// Transport is an http.RoundTripper that authenticates requests to one upstream registry.
//
// Once a host has named its realm (in a 401 or to Ping), a request with a scope set by
// WithScope goes out with the token for that realm, service, scope and the credentials'
// identity, cached or fetched first. Otherwise, or when the registry answers 401 all the same:
//
//   - with a Bearer challenge, the transport fetches a token from the realm (Basic credentials
//     attached when Credentials has some for the host), for the challenge's scope or, when the
//     challenge names none, the context's; caches it; and sends the request once more.
//     Concurrent fetches of one token are merged.
//   - with a Basic challenge, it sends the request once more with the credentials, and with
//     them from the start for that host afterwards.
//
// The caller gets the registry's last answer. A 401 comes back unchanged when there is nothing
// to retry with: no credentials for a Basic challenge, a token endpoint that refused (401 or
// 403, remembered for 10 s), a challenge that does not parse, a request whose body cannot be
// replayed (no GetBody), or a retry that was refused too. Any other failure to get a token (an
// unusable realm, a token endpoint that is down, slow or answers nonsense) is returned as an
// error, wrapped with what failed, and the 401 is closed.
//
// Requests passed through untouched: those with an Authorization header already, and those that
// follow a redirect to another host (a registry sending a blob to its storage: credentials and
// tokens are for the registry alone). A context from WithClientToken sends that header instead,
// with no fetch and no caching.
type Transport struct {
	base    http.RoundTripper
	creds   Credentials
	now     func() time.Time
	log     *slog.Logger
	margin  time.Duration
	timeout time.Duration
	salt    [32]byte // keys the credential identities, so a cache key is no password hash
	tokens  *ttlCache[tokenKey, *tokenEntry]
	hosts   *ttlCache[string, hostChallenge]
	group   singleflight.Group
	waiting func() // tests: called when a request starts waiting for a token fetch
}

// tokenKey names a cached token. id is a keyed hash of the credentials (zero when anonymous),
// so that tokens obtained with one set of credentials never serve another.
type tokenKey struct {
	realm, service, scope string
	id                    [sha256.Size]byte
}

func (k tokenKey) flight() string {
	return k.realm + "\x00" + k.service + "\x00" + k.scope + "\x00" + string(k.id[:])
}

// tokenEntry is a cached token, as the Authorization header that carries it, or a refusal.
type tokenEntry struct {
	header secret
	denied error
}

// hostChallenge is what a host's last 401 asked for.
type hostChallenge struct {
	basic   bool
	realm   *url.URL
	service string
}

// basicCreds are credentials for one request, nil when anonymous.
type basicCreds struct {
	username string
	password secret
}

// header is the Authorization value presenting c (RFC 7617).
func (c *basicCreds) header() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.username+":"+c.password.reveal()))
}

// NewTransport returns a Transport sending requests through base (nil means
// http.DefaultTransport) with creds (nil means Anonymous).
func NewTransport(base http.RoundTripper, creds Credentials, opts TransportOptions) *Transport {
	t := &Transport{
		base:    base,
		creds:   creds,
		now:     opts.Now,
		log:     opts.Logger,
		margin:  opts.Margin,
		timeout: opts.TokenTimeout,
	}
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	if t.creds == nil {
		t.creds = Anonymous{}
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.timeout <= 0 {
		t.timeout = defaultTokenTimeout
	}
	n := opts.MaxEntries
	if n <= 0 {
		n = defaultMaxEntries
	}
	t.tokens = newTTLCache[tokenKey, *tokenEntry](n)
	t.hosts = newTTLCache[string, hostChallenge](maxHosts)
	_, _ = rand.Read(t.salt[:]) // never fails: crypto/rand panics rather than return an error
	return t
}

func (t *Transport) String() string   { return "auth.Transport" }
func (t *Transport) GoString() string { return t.String() }

// Format prints String for every verb: the struct holds cached tokens and credentials, which
// fmt would otherwise print field by field.
func (t *Transport) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, t.String()) }

func (t *Transport) LogValue() slog.Value { return slog.StringValue(t.String()) }

// RoundTrip sends req, authenticated as the Transport's doc describes.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if h, ok := clientTokenFrom(ctx); ok {
		return t.base.RoundTrip(withAuthorization(req, h.reveal()))
	}
	if req.Header.Get("Authorization") != "" || redirectedAway(req) {
		return t.base.RoundTrip(req)
	}
	host := strings.ToLower(req.URL.Host)
	creds, err := t.credentials(ctx, host)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	id := t.identity(creds)
	scope := scopeFrom(ctx)
	now := t.now()

	first := req
	var sent *tokenEntry
	sentBasic := false
	if hc, ok := t.hosts.get(host, now); ok {
		switch {
		case hc.basic && creds != nil:
			first, sentBasic = withAuthorization(req, creds.header()), true
		case !hc.basic && scope != "":
			// The realm is known, so the token can be had before the registry asks for it, as
			// Docker does after its ping: a new repository then costs no 401 round trip.
			k := tokenKey{realm: hc.realm.String(), service: hc.service, scope: scope, id: id}
			e, err := t.token(ctx, k, hc.realm, creds)
			switch {
			case err == nil:
				first, sent = withAuthorization(req, e.header.reveal()), e
			case !errors.Is(err, ErrDenied):
				closeBody(req)
				return nil, err
			}
			// Refused: the request goes without, and the registry's 401 comes back.
		}
	}
	resp, err := t.base.RoundTrip(first)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !replayable(req) {
		return resp, err
	}
	chs, err := ParseChallenge(strings.Join(resp.Header.Values("Www-Authenticate"), ", "))
	if err != nil {
		t.log.LogAttrs(ctx, slog.LevelDebug, "401 without a usable challenge",
			slog.String("upstream", host), slog.String("err", err.Error()))
		return resp, nil
	}
	if c, ok := bearerChallenge(chs); ok {
		return t.retryBearer(req, resp, c, host, scope, creds, id, sent)
	}
	if !hasScheme(chs, "basic") {
		return resp, nil
	}
	t.hosts.put(host, hostChallenge{basic: true}, now.Add(hostTTL), now)
	if creds == nil || sentBasic {
		return resp, nil
	}
	return t.resend(req, resp, creds.header())
}

// retryBearer answers a Bearer challenge: a token, then the request again.
func (t *Transport) retryBearer(req *http.Request, resp *http.Response, c Challenge, host, scope string, creds *basicCreds, id [sha256.Size]byte, sent *tokenEntry) (*http.Response, error) {
	ctx := req.Context()
	realm, err := checkRealm(c.Realm(), req.URL)
	if err != nil {
		discard(resp)
		return nil, fmt.Errorf("challenge from %s: %w", host, err)
	}
	now := t.now()
	t.hosts.put(host, hostChallenge{realm: realm, service: c.Service()}, now.Add(hostTTL), now)
	k := tokenKey{realm: realm.String(), service: c.Service(), scope: scope, id: id}
	if s := c.Scope(); s != "" {
		k.scope = s
	}
	if sent != nil {
		// The registry refused a cached token (revoked, or too narrow for this request): drop
		// it, unless another request has already replaced it.
		t.tokens.deleteIf(k, func(e *tokenEntry) bool { return e == sent })
	}
	e, err := t.token(ctx, k, realm, creds)
	if errors.Is(err, ErrDenied) {
		return resp, nil
	}
	if err != nil {
		discard(resp)
		return nil, err
	}
	return t.resend(req, resp, e.header.reveal())
}

// resend sends req again, with a fresh body and authorization, once the 401 it got is
// drained.
func (t *Transport) resend(req *http.Request, resp *http.Response, authorization string) (*http.Response, error) {
	discard(resp)
	r := withAuthorization(req, authorization)
	if req.Body != nil && req.Body != http.NoBody {
		b, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("replay %s %s: %w", req.Method, req.URL.Redacted(), err)
		}
		r.Body = b
	}
	return t.base.RoundTrip(r)
}

// token returns the cached token for k, or fetches one, merging concurrent fetches.
func (t *Transport) token(ctx context.Context, k tokenKey, realm *url.URL, creds *basicCreds) (*tokenEntry, error) {
	if e, ok := t.tokens.get(k, t.now()); ok {
		return e, e.denied
	}
	ch := t.group.DoChan(k.flight(), func() (any, error) {
		if e, ok := t.tokens.get(k, t.now()); ok {
			return e, e.denied
		}
		// Detached from the first caller: its cancellation must not fail the others waiting.
		return t.fetch(context.WithoutCancel(ctx), k, realm, creds)
	})
	if t.waiting != nil {
		t.waiting()
	}
	v, err := await(ctx, ch)
	if err != nil {
		return nil, err
	}
	return v.(*tokenEntry), nil
}

// fetch asks the token endpoint for a token and caches the answer: the token for its lifetime
// less the margin, a refusal for deniedTTL.
func (t *Transport) fetch(ctx context.Context, k tokenKey, realm *url.URL, creds *basicCreds) (*tokenEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	start := t.now()
	name := realmName(realm)
	attrs := []slog.Attr{slog.String("realm", name), slog.String("scope", k.scope)}
	fail := func(err error) (*tokenEntry, error) {
		err = fmt.Errorf("token from %s: %w", name, err)
		t.log.LogAttrs(ctx, slog.LevelWarn, "token request failed", append(attrs, slog.String("err", err.Error()))...)
		return nil, err
	}
	req, err := tokenRequest(ctx, realm, k.service, nonEmpty(k.scope))
	if err != nil {
		return nil, err
	}
	if creds != nil {
		req.Header.Set("Authorization", creds.header())
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return fail(err)
	}
	defer discard(resp)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		err := fmt.Errorf("token from %s: %w (status %d)", name, ErrDenied, resp.StatusCode)
		level := slog.LevelDebug // expected for a private repository asked for anonymously
		if creds != nil {
			level = slog.LevelWarn
		}
		t.log.LogAttrs(ctx, level, "token request refused", append(attrs, slog.Int("status", resp.StatusCode))...)
		t.tokens.put(k, &tokenEntry{denied: err}, start.Add(deniedTTL), start)
		return nil, err
	default:
		return fail(fmt.Errorf("status %d", resp.StatusCode))
	}
	body, err := readBounded(resp.Body, maxTokenBody)
	if err != nil {
		return fail(err)
	}
	tok, life, err := parseToken(body)
	if err != nil {
		return fail(err)
	}
	e := &tokenEntry{header: newSecret("Bearer " + tok.reveal())}
	if use := life - t.marginFor(life); use > 0 {
		t.tokens.put(k, e, start.Add(use), start)
	}
	t.log.LogAttrs(ctx, slog.LevelDebug, "token fetched", append(attrs, slog.Duration("lifetime", life))...)
	return e, nil
}

func (t *Transport) marginFor(life time.Duration) time.Duration {
	switch {
	case t.margin < 0:
		return 0
	case t.margin > 0:
		return t.margin
	}
	return min(life/10, maxMargin)
}

// Ping sends GET to a registry's /v2/ URL (v2, e.g. https://ghcr.io/v2/) without credentials and
// returns the challenges of its 401: nil when it answers 2xx, an error for any other status.
// What it learns is remembered as a 401 would be, so the next request to that host can carry a
// token at once.
func (t *Transport) Ping(ctx context.Context, v2 *url.URL) ([]Challenge, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	chs, err := ping(ctx, t.base, v2)
	if err != nil {
		return nil, err
	}
	host := strings.ToLower(v2.Host)
	now := t.now()
	if c, ok := bearerChallenge(chs); ok {
		if realm, err := checkRealm(c.Realm(), v2); err == nil {
			t.hosts.put(host, hostChallenge{realm: realm, service: c.Service()}, now.Add(hostTTL), now)
		}
	} else if hasScheme(chs, "basic") {
		t.hosts.put(host, hostChallenge{basic: true}, now.Add(hostTTL), now)
	}
	return chs, nil
}

func (t *Transport) credentials(ctx context.Context, host string) (*basicCreds, error) {
	user, pass, ok, err := t.creds.Basic(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", host, err)
	}
	if !ok {
		return nil, nil
	}
	return &basicCreds{username: user, password: newSecret(pass)}, nil
}

func (t *Transport) identity(c *basicCreds) [sha256.Size]byte {
	if c == nil {
		return [sha256.Size]byte{}
	}
	h := sha256.New()
	h.Write(t.salt[:])
	_, _ = io.WriteString(h, c.username)
	h.Write([]byte{0})
	_, _ = io.WriteString(h, c.password.reveal())
	var id [sha256.Size]byte
	h.Sum(id[:0])
	return id
}

// redirectedAway reports whether req follows a redirect to a host other than the one the
// caller asked for.
func redirectedAway(req *http.Request) bool {
	orig := req
	for orig.Response != nil && orig.Response.Request != nil {
		orig = orig.Response.Request
	}
	return orig != req && !strings.EqualFold(orig.URL.Host, req.URL.Host)
}

// replayable reports whether req can be sent a second time.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// withAuthorization returns a copy of req carrying the header: a RoundTripper must not modify
// the request it is given.
func withAuthorization(req *http.Request, authorization string) *http.Request {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", authorization)
	return r
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
