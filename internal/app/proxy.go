package app

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/redirector"
	"github.com/happy-turtle/oci-proxy/upstream"
	"github.com/happy-turtle/oci-proxy/upstream/auth"
	"github.com/happy-turtle/oci-proxy/upstream/proxy"
)

// TokenPath is where oci-proxy serves its own token endpoint, the realm of the challenges it
// sends for routes that relay their clients' credentials.
const TokenPath = "/token"

// admitTTL is how long an upstream's "yes" to a client's token for a repository is believed
// before a mirrored blob of it is handed out again without asking: short, so that a revoked
// token stops working soon, long enough that a pull of many layers asks once.
const admitTTL = time.Minute

// maxAdmitted bounds the remembered answers; a burst of distinct tokens only evicts early.
const maxAdmitted = 10000

// proxies serves the routes in proxy mode (redirector.Proxy): one upstream/proxy.Proxy per route,
// each with its route's token-flow client, plus the challenge and admission of routes that relay
// their clients' credentials.
type proxies struct {
	byPrefix map[string]*routeProxy
	name     string // the public host name (config name), for the realm and service
	log      *slog.Logger

	admitMu  sync.Mutex
	admitted map[string]time.Time // sha256(authorization) + repository → until
	flights  singleflight.Group
}

type routeProxy struct {
	p     *proxy.Proxy
	check *http.Client // HEADs for admission: the route's client, not following redirects
}

func newProxies(cfg *config.Config, clients *upstreamClients, obs proxy.Observer, log *slog.Logger) *proxies {
	ps := &proxies{byPrefix: map[string]*routeProxy{}, name: cfg.Name, log: log, admitted: map[string]time.Time{}}
	for _, r := range cfg.Routes {
		if r.Mode != config.Proxy {
			continue
		}
		client := &http.Client{Transport: clients.byPrefix[r.Prefix]}
		check := *client
		check.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		check.Timeout = 30 * time.Second
		opts := proxy.Options{
			Client:     client,
			TagTTL:     offIfZero(cfg.Cache.TagTTL),
			StaleGrace: offIfZero(cfg.Cache.StaleGrace),
			Logger:     log,
			Observer:   obs,
		}
		opts.MaxCacheBytes = cfg.Cache.MaxBytes
		if opts.MaxCacheBytes == 0 {
			opts.MaxCacheBytes = -1
		}
		ps.byPrefix[r.Prefix] = &routeProxy{p: proxy.New(opts), check: &check}
	}
	return ps
}

// offIfZero maps the configuration's 0 (off) to the proxy's negative (off); its 0 is a default.
func offIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func routeCredentials(a config.Auth) (auth.Credentials, error) {
	switch {
	case a.Username != "":
		return auth.FromFiles(a.Username, a.PasswordFile)
	case a.DockerConfig != "":
		return auth.DockerConfig(a.DockerConfig)
	}
	// Anonymous tokens, or a route whose requests carry each client's own Authorization.
	return auth.Anonymous{}, nil
}

// newUpstreamTransport is the connection pool of every proxy-mode upstream.
func newUpstreamTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
}

// Serve answers a proxy-mode request with its route's proxy.
func (ps *proxies) Serve(w http.ResponseWriter, r *http.Request, q redirector.ProxyRequest) {
	rp := ps.byPrefix[q.Upstream.Prefix]
	authz := ""
	if q.Upstream.ClientAuth {
		authz = r.Header.Get("Authorization")
		if authz == "" {
			ps.challenge(w, r, q, "authentication required")
			return
		}
		// An upstream 401 (a token it refuses) reaches the client with this proxy's challenge.
		w = &challengeWriter{ResponseWriter: w, challenge: ps.challengeHeader(r, q)}
	}
	req := proxy.Request{
		Method:        r.Method,
		URL:           q.URL,
		ClientName:    q.Route.Name,
		Accept:        r.Header.Values("Accept"),
		Authorization: authz,
	}
	switch q.Route.Kind {
	case redirector.KindManifest:
		req.Kind = proxy.Manifest
		if q.Route.Ref.IsDigest() {
			req.Digest = q.Route.Ref.Digest()
		} else {
			req.Tag = q.Route.Ref.Tag()
		}
	case redirector.KindTags:
		req.Kind = proxy.Tags
	case redirector.KindReferrers:
		req.Kind, req.Digest = proxy.Referrers, q.Route.Digest
	case redirector.KindBlob:
		req.Kind, req.Digest, req.Range = proxy.Blob, q.Route.Digest, r.Header.Get("Range")
		// A streamed layer may take longer than the server's write timeout: the deadline moves
		// with every write instead, so only a client that stops reading is cut off.
		w = &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w)}
	}
	_, repo := q.Upstream.Repository(q.Name)
	ctx := auth.WithScope(r.Context(), "repository:"+repo+":pull")
	rp.p.Serve(w, r.WithContext(ctx), req)
}

// Admit lets a client of a route that relays credentials have a blob only when the upstream
// accepts that client's Authorization for the blob (a HEAD, remembered for admitTTL per
// credential and repository), so that a private layer sync copied to a bucket is not served to
// whoever guesses its digest. For /v2/ it only asks clients without credentials to get some.
func (ps *proxies) Admit(w http.ResponseWriter, r *http.Request, q redirector.ProxyRequest) bool {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		ps.challenge(w, r, q, "authentication required")
		return false
	}
	if q.Route.Kind == redirector.KindBase {
		return true
	}
	_, repo := q.Upstream.Repository(q.Name)
	sum := sha256.Sum256([]byte(authz))
	key := string(sum[:]) + "\x00" + q.Upstream.Base.Host + "/" + repo
	now := time.Now()
	ps.admitMu.Lock()
	until, ok := ps.admitted[key]
	ps.admitMu.Unlock()
	if ok && now.Before(until) {
		return true
	}
	v, _, _ := ps.flights.Do(key+"\x00"+q.Route.Digest.String(), func() (any, error) {
		return ps.ask(r.Context(), q, authz), nil
	})
	status := v.(int)
	switch {
	case status >= 200 && status < 400:
		ps.admitMu.Lock()
		if len(ps.admitted) >= maxAdmitted {
			clear(ps.admitted)
		}
		ps.admitted[key] = now.Add(admitTTL)
		ps.admitMu.Unlock()
		return true
	case status == http.StatusUnauthorized:
		ps.challenge(w, r, q, "the upstream refused these credentials")
	case status == http.StatusForbidden:
		writeOCIError(w, r, http.StatusForbidden, "DENIED", "requested access to the resource is denied")
	case status == http.StatusNotFound:
		writeOCIError(w, r, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
	case status == http.StatusTooManyRequests:
		writeOCIError(w, r, http.StatusTooManyRequests, "TOOMANYREQUESTS", "the upstream is rate limiting")
	default:
		writeOCIError(w, r, http.StatusBadGateway, "UNAVAILABLE", "the upstream registry cannot be reached")
	}
	return false
}

// ask HEADs the blob upstream with the client's credentials and returns the status (502 when
// there is no answer).
func (ps *proxies) ask(ctx context.Context, q redirector.ProxyRequest, authz string) int {
	rp := ps.byPrefix[q.Upstream.Prefix]
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, q.URL, nil)
	if err != nil {
		return http.StatusBadGateway
	}
	req.Header.Set("Authorization", authz)
	resp, err := rp.check.Do(req)
	if err != nil {
		ps.log.Warn("admission check failed", slog.String("repository", q.Route.Name), slog.String("err", err.Error()))
		return http.StatusBadGateway
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (ps *proxies) challenge(w http.ResponseWriter, r *http.Request, q redirector.ProxyRequest, msg string) {
	w.Header().Set("WWW-Authenticate", ps.challengeHeader(r, q))
	writeOCIError(w, r, http.StatusUnauthorized, "UNAUTHORIZED", msg)
}

// challengeHeader names this proxy's token endpoint as the realm, with the client's scope.
func (ps *proxies) challengeHeader(r *http.Request, q redirector.ProxyRequest) string {
	scope := ""
	if q.Route.Name != "" {
		scope = "repository:" + q.Route.Name + ":pull"
	}
	return auth.ChallengeHeader(ps.realm(r), ps.service(), scope)
}

func (ps *proxies) service() string {
	if ps.name != "" {
		return ps.name
	}
	return "oci-proxy"
}

// hostPort is what a realm may be built from when the configuration names no public host.
var hostPort = regexp.MustCompile(`^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?$`)

// realm is the URL of the token endpoint as the client reaches it: https://<name>/token with a
// configured name (so a client never sends its credentials over plain HTTP by mistake), else the
// request's own host over the connection's scheme (loopback, tests).
func (ps *proxies) realm(r *http.Request) string {
	if ps.name != "" {
		return (&url.URL{Scheme: "https", Host: ps.name, Path: TokenPath}).String()
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if !hostPort.MatchString(host) {
		host = "localhost"
	}
	return scheme + "://" + host + TokenPath
}

// tokenRelay is the token endpoint: client token requests go to the upstream's token service
// with their scopes rewritten to the upstream names. Scope-less requests (logins) go to the
// registry of the routes that relay credentials, when they all share one.
func tokenRelay(ups *upstream.Table, log *slog.Logger) http.Handler {
	var login *url.URL
	shared := true
	for _, r := range ups.Routes() {
		if !r.ClientAuth {
			continue
		}
		if login != nil && login.Host != r.Base.Host {
			shared = false
		}
		login = r.Base
	}
	if !shared {
		login = nil
	}
	return auth.NewRelay(auth.RelayOptions{
		MapScope: func(name string) (*url.URL, string, bool) {
			route, up := ups.Lookup(name)
			_, repo := route.Repository(up)
			return route.Base, repo, true
		},
		Login:  login,
		Logger: log,
	})
}

// challengeWriter adds the proxy's challenge to a 401 passed on from the upstream.
type challengeWriter struct {
	http.ResponseWriter
	challenge string
}

func (w *challengeWriter) WriteHeader(status int) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", w.challenge)
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *challengeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// deadlineWriter pushes the write deadline forward before each write.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
}

// writeIdle is how long one write of a streamed blob may take.
const writeIdle = 30 * time.Second

func (w *deadlineWriter) Write(b []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(writeIdle)) // not every writer supports deadlines
	return w.ResponseWriter.Write(b)
}

func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writeOCIError writes one error of the distribution spec.
func writeOCIError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body := `{"errors":[{"code":` + strconv.Quote(code) + `,"message":` + strconv.Quote(msg) + `}]}` + "\n"
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
}
