package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/happy-turtle/oci-proxy/oci"
)

const (
	defaultChallengeTTL = 5 * time.Minute
	defaultRelayTimeout = 10 * time.Second
	// maxScopes bounds the scopes of one token request: a pull asks for one, a cross-repository
	// blob mount for two.
	maxScopes = 16
	// maxUpstreams bounds the remembered challenges: one per upstream registry in the
	// configuration.
	maxUpstreams = 256
)

// Error codes of the distribution spec the relay answers with.
const (
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeUnsupported     = "UNSUPPORTED"
	codeDenied          = "DENIED"
	codeUnauthorized    = "UNAUTHORIZED"
	codeTooManyRequests = "TOOMANYREQUESTS"
	codeUnknown         = "UNKNOWN"
)

// RelayOptions configure NewRelay. The zero value refuses every repository name.
type RelayOptions struct {
	// MapScope maps a repository name as clients use it ("tools/lint") to the upstream serving
	// it: the route's /v2/ base URL ("https://ghcr.io/v2/acme/"), whose scheme and host name the
	// registry whose token endpoint is asked, and the name there ("acme/lint"). ok false means
	// the proxy serves no such name. Names reach it validated. nil means no name is known.
	MapScope func(clientRepo string) (upstream *url.URL, upstreamRepo string, ok bool)
	// Login is the upstream registry (its /v2/ URL) asked for a token request that names no
	// scope at all: `docker login` and `podman login` check credentials that way. nil refuses
	// such requests, as when several registries sit behind the proxy and none can be chosen.
	Login *url.URL
	// Base sends the relay's own requests (pings of /v2/ and token requests), which do not
	// follow redirects; nil means http.DefaultTransport.
	Base http.RoundTripper
	// Timeout bounds each outgoing request; zero means 10 s.
	Timeout time.Duration
	// ChallengeTTL is how long the realm and service an upstream's /v2/ named are reused;
	// zero means 5 minutes. A failed discovery is not remembered.
	ChallengeTTL time.Duration
	// Now is the clock for ChallengeTTL; nil means time.Now.
	Now func() time.Time
	// Logger receives failures to reach an upstream (warn) and each relayed answer's status
	// (debug); nil discards. No record holds an Authorization header or a token.
	Logger *slog.Logger
}

// NewRelay returns oci-proxy's own token endpoint, for routes whose clients bring their own
// credentials. The proxy challenges such clients with ChallengeHeader(<this endpoint's URL>,
// <service>, <scope>); a client then asks GET <endpoint>?service=...&scope=repository:tools/lint:pull,
// with its Basic credentials or none.
//
// The relay reads every scope parameter (several may be given, and one may hold several scopes
// separated by spaces). Only repository scopes are relayed and only their pull action: push
// and other actions are dropped, as the proxy serves no writes; other resource types
// (registry:catalog:*) are dropped whole. Each name is mapped with MapScope; all must belong to
// one upstream registry. The relay learns that registry's realm and service from its /v2/
// challenge (remembered for ChallengeTTL), sends the token request there with the rewritten
// scopes and the client's Authorization header as it came, and answers with the token
// server's status and JSON body (at most 64 KiB) and Cache-Control: no-store. The proxy
// presents no credentials of its own. The service parameter the client sends is not checked:
// the relay serves one service.
//
// Refusals are OCI errors: 400 NAME_INVALID for a malformed name, 404 NAME_UNKNOWN for a name
// MapScope does not know, 400 UNSUPPORTED for a malformed scope, no repository scope, more than
// 16 scopes or names of several upstreams, 403 DENIED when no pull access is asked for, 405
// UNSUPPORTED for a method but GET and HEAD, and 502 UNKNOWN when the upstream cannot be
// reached or answers nonsense.
func NewRelay(opts RelayOptions) http.Handler {
	rl := &relay{
		mapScope: opts.MapScope,
		login:    loginRegistry(opts.Login),
		base:     opts.Base,
		timeout:  opts.Timeout,
		ttl:      opts.ChallengeTTL,
		now:      opts.Now,
		log:      opts.Logger,
		known:    newTTLCache[string, discovered](maxUpstreams),
	}
	if rl.mapScope == nil {
		rl.mapScope = func(string) (*url.URL, string, bool) { return nil, "", false }
	}
	if rl.base == nil {
		rl.base = http.DefaultTransport
	}
	if rl.timeout <= 0 {
		rl.timeout = defaultRelayTimeout
	}
	if rl.ttl <= 0 {
		rl.ttl = defaultChallengeTTL
	}
	if rl.now == nil {
		rl.now = time.Now
	}
	if rl.log == nil {
		rl.log = slog.New(slog.DiscardHandler)
	}
	return rl
}

type relay struct {
	mapScope func(string) (*url.URL, string, bool)
	login    *url.URL // the registry of scope-less (login) requests; nil refuses them
	base     http.RoundTripper
	timeout  time.Duration
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger
	known    *ttlCache[string, discovered]
	group    singleflight.Group
}

func loginRegistry(u *url.URL) *url.URL {
	if u == nil {
		return nil
	}
	return &url.URL{Scheme: u.Scheme, Host: strings.ToLower(u.Host), Path: "/v2/"}
}

// discovered is where an upstream registry's tokens come from.
type discovered struct {
	realm   *url.URL
	service string
}

// relayError is a refusal as the client sees it; what caused it, if anything internal, is
// logged instead.
type relayError struct {
	status        int
	code, message string
}

func (rl *relay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, &relayError{http.StatusMethodNotAllowed, codeUnsupported, "the token endpoint answers GET"})
		return
	}
	registry, scopes, e := rl.rewrite(r.URL.Query()["scope"])
	if e != nil {
		writeError(w, r, e)
		return
	}
	ctx := r.Context()
	attrs := []slog.Attr{slog.String("upstream", registry.Host)}
	unavailable := &relayError{http.StatusBadGateway, codeUnknown, "the upstream token service is unavailable"}
	d, err := rl.discover(ctx, registry)
	if err != nil {
		rl.log.LogAttrs(ctx, slog.LevelWarn, "token relay: discovery failed", append(attrs, slog.String("err", err.Error()))...)
		writeError(w, r, unavailable)
		return
	}
	status, body, err := rl.forward(ctx, d, scopes, r.Header.Values("Authorization"))
	if err != nil {
		rl.log.LogAttrs(ctx, slog.LevelWarn, "token relay: token request failed", append(attrs, slog.String("err", err.Error()))...)
		writeError(w, r, unavailable)
		return
	}
	attrs = append(attrs, slog.Int("status", status))
	ok, refused, valid := status >= 200 && status <= 299, status >= 400 && status <= 599, json.Valid(body)
	switch {
	case (ok || refused) && valid:
		rl.log.LogAttrs(ctx, slog.LevelDebug, "token relayed", attrs...)
		writeJSON(w, r, status, body)
	case refused:
		// An error page: the status says what the client needs to know.
		rl.log.LogAttrs(ctx, slog.LevelDebug, "token relayed", attrs...)
		writeError(w, r, upstreamRefusal(status))
	default:
		rl.log.LogAttrs(ctx, slog.LevelWarn, "token relay: unusable answer", attrs...)
		writeError(w, r, unavailable)
	}
}

// rewrite maps the scope parameters to the upstream registry and the scopes to ask it for.
func (rl *relay) rewrite(params []string) (*url.URL, []string, *relayError) {
	var registry *url.URL
	var out []string
	n := 0
	for _, p := range params {
		for _, s := range strings.Fields(p) {
			if n++; n > maxScopes {
				return nil, nil, &relayError{http.StatusBadRequest, codeUnsupported, "more than " + strconv.Itoa(maxScopes) + " scopes"}
			}
			rs, err := parseScope(s)
			if err != nil {
				return nil, nil, &relayError{http.StatusBadRequest, codeUnsupported, err.Error()}
			}
			if rs.typ != "repository" {
				continue
			}
			if err := oci.ValidateName(rs.name); err != nil {
				return nil, nil, &relayError{http.StatusBadRequest, codeNameInvalid, err.Error()}
			}
			up, repo, ok := rl.mapScope(rs.name)
			if !ok || up == nil {
				return nil, nil, &relayError{http.StatusNotFound, codeNameUnknown, "repository name not known to registry: " + rs.name}
			}
			reg := &url.URL{Scheme: up.Scheme, Host: strings.ToLower(up.Host), Path: "/v2/"}
			if registry == nil {
				registry = reg
			} else if reg.Scheme != registry.Scheme || reg.Host != registry.Host {
				return nil, nil, &relayError{http.StatusBadRequest, codeUnsupported, "the scopes name repositories of more than one upstream registry"}
			}
			if slices.Contains(rs.actions, "pull") {
				if up := "repository:" + repo + ":pull"; !slices.Contains(out, up) {
					out = append(out, up)
				}
			}
		}
	}
	if registry == nil && n == 0 && rl.login != nil {
		// A login: the credentials are checked against the registry's token service with no
		// scope, which grants nothing but a valid token.
		return rl.login, nil, nil
	}
	if registry == nil {
		return nil, nil, &relayError{http.StatusBadRequest, codeUnsupported, "a repository scope is required"}
	}
	if len(out) == 0 {
		return nil, nil, &relayError{http.StatusForbidden, codeDenied, "only pull access is relayed"}
	}
	return registry, out, nil
}

// discover returns the realm and service of a registry's Bearer challenge, pinging its /v2/
// when they are not remembered; concurrent pings of one registry are merged.
func (rl *relay) discover(ctx context.Context, registry *url.URL) (discovered, error) {
	key := registry.Scheme + "://" + registry.Host
	if d, ok := rl.known.get(key, rl.now()); ok {
		return d, nil
	}
	v, err := await(ctx, rl.group.DoChan(key, func() (any, error) {
		// Detached from the first caller: its cancellation must not fail the others waiting.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rl.timeout)
		defer cancel()
		chs, err := ping(ctx, rl.base, registry)
		if err != nil {
			return nil, err
		}
		c, ok := bearerChallenge(chs)
		if !ok {
			return nil, fmt.Errorf("ping %s: no Bearer challenge", registry)
		}
		realm, err := checkRealm(c.Realm(), registry)
		if err != nil {
			return nil, fmt.Errorf("ping %s: %w", registry, err)
		}
		d := discovered{realm: realm, service: c.Service()}
		now := rl.now()
		rl.known.put(key, d, now.Add(rl.ttl), now)
		return d, nil
	}))
	if err != nil {
		return discovered{}, err
	}
	return v.(discovered), nil
}

// forward sends the token request with the client's Authorization header and returns the
// token server's status and body.
func (rl *relay) forward(ctx context.Context, d discovered, scopes, authorization []string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, rl.timeout)
	defer cancel()
	req, err := tokenRequest(ctx, d.realm, d.service, scopes)
	if err != nil {
		return 0, nil, err
	}
	if len(authorization) > 0 {
		req.Header["Authorization"] = slices.Clone(authorization)
	}
	name := realmName(d.realm)
	resp, err := rl.base.RoundTrip(req)
	if err != nil {
		return 0, nil, fmt.Errorf("token from %s: %w", name, err)
	}
	defer discard(resp)
	body, err := readBounded(resp.Body, maxTokenBody)
	if err != nil {
		return 0, nil, fmt.Errorf("token from %s: %w", name, err)
	}
	return resp.StatusCode, body, nil
}

// upstreamRefusal stands in for a token server's error answer whose body is not JSON.
func upstreamRefusal(status int) *relayError {
	switch status {
	case http.StatusUnauthorized:
		return &relayError{status, codeUnauthorized, "authentication required"}
	case http.StatusForbidden:
		return &relayError{status, codeDenied, "requested access to the resource is denied"}
	case http.StatusTooManyRequests:
		return &relayError{status, codeTooManyRequests, "too many requests"}
	}
	return &relayError{status, codeUnknown, "the upstream token service answered " + strconv.Itoa(status)}
}

func writeError(w http.ResponseWriter, r *http.Request, e *relayError) {
	type ociError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	// Cannot fail: two strings, and invalid UTF-8 is replaced rather than refused.
	body, _ := json.Marshal(struct {
		Errors []ociError `json:"errors"`
	}{[]ociError{{e.code, e.message}}})
	writeJSON(w, r, e.status, append(body, '\n'))
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
