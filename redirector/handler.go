// Package redirector is the HTTP face of oci-proxy: it parses every /v2/ request into a typed
// Route, refuses what the OCI distribution grammar refuses, and answers with a redirect to the
// upstream registry or, for blobs, to wherever the BlobRouter chooses. It never fetches image data,
// never builds a Location from the request's Host, raw query or unvalidated path, and depends only
// on the small interfaces declared here.
package redirector

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// BlobQuery is a blob request as the router sees it.
type BlobQuery struct {
	Client netip.Addr
	Name   string // repository name as the client used it
	Digest oci.Digest
	Method string // GET or HEAD
}

// BlobTarget is where a blob request goes. An empty URL means the upstream.
type BlobTarget struct {
	URL    string // absolute URL built from configured base URLs only
	Mirror string // mirror name, for X-Mirror; ignored when URL is empty
	Reason string // for X-Mirror-Reason, e.g. "country" or "fallback:not-present"
	// Country is the client's country as located, for the request log only; "" when unknown.
	Country string
	// Values, when not nil, holds Mirror, Reason and URL, in that order, in an array shared by
	// every answer that gives them: the headers are set from it without an allocation. It is
	// never modified, and ignored when URL is empty.
	Values *[3]string
}

// ReasonNoMirrors is the X-Mirror-Reason of a blob sent to the upstream because no BlobRouter is
// configured.
const ReasonNoMirrors = "no-mirrors"

// BlobRouter chooses where a blob request goes. It must answer (falling back to the upstream)
// rather than fail: a blob the upstream has is never refused because a mirror misbehaved.
type BlobRouter interface {
	RouteBlob(ctx context.Context, q BlobQuery) BlobTarget
}

// ProxyRequest is a request on a route in proxy mode, as a Proxy sees it.
type ProxyRequest struct {
	Route    Route           // the parsed request; KindBase for /v2/
	Upstream *upstream.Route // the route it falls under; nil for KindBase
	Name     string          // the repository name as the upstream knows it
	URL      string          // the upstream URL of the request: a configured base plus validated parts
}

// Proxy serves the routes in proxy mode (upstream.Proxy): manifests, tag lists, referrers and the
// blobs no mirror holds are fetched from the upstream and answered by the proxy itself.
type Proxy interface {
	// Serve answers q itself, errors included.
	Serve(w http.ResponseWriter, r *http.Request, q ProxyRequest)
	// Admit is asked before a blob of a route that relays client credentials is sent to a mirror,
	// and for /v2/ when any route does: it reports whether the client of r may have it, or
	// writes the refusal (a challenge, a denial) and reports false. A mirrored private layer is
	// never handed to a client the upstream would refuse.
	Admit(w http.ResponseWriter, r *http.Request, q ProxyRequest) bool
}

// Observation is one answered request, for metrics. Kind is 0 for requests outside /v2/; Mirror
// and Reason are set for blob redirects only.
type Observation struct {
	Kind           Kind
	Status         int
	Mirror, Reason string
	Elapsed        time.Duration
}

// Observer is told about every answered request.
type Observer interface {
	Observe(o Observation)
}

// Options configure a Handler. Only Upstream is required.
type Options struct {
	// Upstream maps repository names to the upstream registry.
	Upstream *upstream.Table
	// Blobs routes blob requests; nil sends every blob to the upstream (ReasonNoMirrors).
	Blobs BlobRouter
	// Proxy serves the routes in proxy mode; required when Upstream has any.
	Proxy Proxy
	// ClientAddr finds the client's address; nil uses the connection's address.
	ClientAddr func(*http.Request) netip.Addr
	// Ready reports readiness for /readyz; nil is always ready.
	Ready func() error
	// Mount adds handlers for exact paths outside /v2/ (e.g. "/metrics", "/_/resolve").
	Mount map[string]http.Handler
	// Index describes the registry on the index page; the zero value shows generic text.
	// Its functions are called on every visit of the page, with the address ClientAddr finds.
	Index IndexInfo
	// Observer receives every request's outcome; nil observes nothing.
	Observer Observer
	// Logger gets one line per request; nil discards.
	Logger *slog.Logger
	// Now is the clock for latencies; nil is time.Now.
	Now func() time.Time
}

// Handler serves the registry API, the index page and health endpoints.
type Handler struct {
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	since func(time.Time) time.Duration
	index *indexPage
	// manifests caches manifest redirects by path; the upstream table they depend on is fixed
	// for the Handler's life (a reload builds a new Handler).
	manifests *locationCache
}

// New returns a Handler. It panics if opts.Upstream is nil: that is a wiring bug, not input.
func New(opts Options) *Handler {
	if opts.Upstream == nil {
		panic("redirector.New: Options.Upstream is nil")
	}
	for _, r := range opts.Upstream.Routes() {
		if r.Mode == upstream.Proxy && opts.Proxy == nil {
			panic("redirector.New: a route is in proxy mode and Options.Proxy is nil")
		}
	}
	h := &Handler{opts: opts, log: opts.Logger, now: opts.Now}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	// The real clock measures latency with time.Since, which reads only the monotonic clock: one
	// clock read of the two a time.Now costs, on every request.
	h.since = func(t time.Time) time.Duration { return h.now().Sub(t) }
	if h.now == nil {
		h.now, h.since = time.Now, time.Since
	}
	if h.opts.ClientAddr == nil {
		h.opts.ClientAddr = RemoteAddr
	}
	h.index = newIndexPage(opts.Index)
	h.manifests = newLocationCache()
	return h
}

// RemoteAddr is the connection's address, unmapped; the zero Addr if it cannot be parsed.
func RemoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, err2 := net.SplitHostPort(r.RemoteAddr)
		if err2 != nil {
			return netip.Addr{}
		}
		a, _ := netip.ParseAddr(host)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// Header values shared by every answer; net/http never modifies them.
var (
	apiVersion = []string{"registry/2.0"}
	noStore    = []string{"no-store"}
	jsonType   = []string{"application/json"}
)

// ServeHTTP answers one request and logs it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	o := outcome{status: http.StatusOK}
	h.serve(w, r, &o)
	elapsed := h.since(start)
	if h.opts.Observer != nil {
		h.opts.Observer.Observe(Observation{Kind: o.kind, Status: o.status, Mirror: o.mirror, Reason: o.reason, Elapsed: elapsed})
	}
	if lh := h.log.Handler(); lh.Enabled(r.Context(), slog.LevelInfo) {
		h.logRequest(lh, r, &o, start.Add(elapsed), elapsed)
	}
}

// logRequest writes the request's log line. It builds the record itself rather than through
// Logger.LogAttrs, which would read the clock again and walk the stack for a source position that
// no handler here prints.
func (h *Handler) logRequest(lh slog.Handler, r *http.Request, o *outcome, end time.Time, elapsed time.Duration) {
	rec := slog.NewRecord(end, slog.LevelInfo, "request", 0)
	rec.AddAttrs(
		slog.String("route", o.kind.String()),
		slog.String("method", r.Method),
		slog.Int("status", o.status),
		slog.Duration("latency", elapsed),
	)
	if o.mirror != "" {
		rec.AddAttrs(slog.String("mirror", o.mirror), slog.String("reason", o.reason))
		if o.country != "" {
			rec.AddAttrs(slog.String("country", o.country))
		}
	}
	if o.code != "" {
		rec.AddAttrs(slog.String("code", o.code))
	}
	_ = lh.Handle(r.Context(), rec) // a log that cannot be written must not fail the request
}

// outcome is what was answered, for the request log and metrics. The redirects and errors that
// make up nearly all traffic are written directly and noted here; only the answers of other
// handlers (mounts, proxy mode, the index page) go through a recorder, so that the common request
// allocates none.
type outcome struct {
	kind                    Kind
	status                  int
	mirror, reason, country string
	code                    string
}

func (o *outcome) fail(w http.ResponseWriter, r *http.Request, e *Error) {
	o.status, o.code = e.Status, e.Code
	writeError(w, r, e)
}

func (o *outcome) redirect(w http.ResponseWriter, loc []string) {
	o.status = http.StatusTemporaryRedirect
	redirect(w, loc)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, o *outcome) {
	path := r.URL.EscapedPath()
	if path != "/v2" && !strings.HasPrefix(path, "/v2/") {
		rec := newRecorder(w)
		h.serveOther(rec, r, path)
		o.status = rec.status
		return
	}
	w.Header()["Docker-Distribution-Api-Version"] = apiVersion
	o.kind = KindInvalid
	// Path hygiene first, then the method, then the grammar: a write to a valid path learns that
	// this registry is read-only, whatever it asked for.
	if e := checkPath(path); e != nil {
		o.fail(w, r, e)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		o.fail(w, r, errUploads)
		return
	}
	if loc := h.manifests.get(path); loc != nil {
		o.kind = KindManifest
		o.redirect(w, loc)
		return
	}
	route, e := parseChecked(path, r.URL.RawQuery)
	if e != nil {
		o.fail(w, r, e)
		return
	}
	o.kind = route.Kind
	switch route.Kind {
	case KindBase:
		if h.opts.Proxy != nil && h.opts.Upstream.ClientAuth() {
			rec := newRecorder(w)
			ok := h.opts.Proxy.Admit(rec, r, ProxyRequest{Route: route})
			if o.status = rec.status; !ok {
				return
			}
		}
		hd := w.Header()
		hd["Content-Type"] = jsonType
		w.WriteHeader(http.StatusOK)
		o.status = http.StatusOK
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte("{}"))
		}
	case KindBlob:
		h.serveBlob(w, r, route, o)
	default:
		up, name := h.opts.Upstream.Lookup(route.Name)
		var loc string
		switch route.Kind {
		case KindManifest:
			loc = up.URL(name, "manifests", route.Ref.String(), "")
		case KindTags:
			loc = up.URL(name, "tags", "list", route.Query)
		case KindReferrers:
			loc = up.URL(name, "referrers", route.Digest.String(), route.Query)
		}
		if up.Mode == upstream.Proxy {
			rec := newRecorder(w)
			h.opts.Proxy.Serve(rec, r, ProxyRequest{Route: route, Upstream: up, Name: name, URL: loc})
			o.status = rec.status
			return
		}
		if route.Kind == KindManifest {
			o.redirect(w, h.manifests.put(path, loc))
			return
		}
		o.redirect(w, []string{loc})
	}
}

func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, route Route, o *outcome) {
	up, name := h.opts.Upstream.Lookup(route.Name)
	// The upstream's URL is built only when it is needed: a blob sent to a mirror never uses it.
	pq := ProxyRequest{Route: route, Upstream: up, Name: name}
	upstreamURL := func() string {
		if pq.URL == "" {
			pq.URL = up.URL(name, "blobs", route.Digest.String(), "")
		}
		return pq.URL
	}
	if up.ClientAuth {
		upstreamURL()
		rec := newRecorder(w)
		ok := h.opts.Proxy.Admit(rec, r, pq)
		if o.status = rec.status; !ok {
			return
		}
	}
	var t BlobTarget
	if h.opts.Blobs != nil {
		t = h.opts.Blobs.RouteBlob(r.Context(), BlobQuery{
			Client: h.opts.ClientAddr(r),
			Name:   route.Name,
			Digest: route.Digest,
			Method: r.Method,
		})
	}
	toUpstream := t.URL == ""
	if toUpstream {
		t.URL = upstreamURL()
		t.Mirror = upstream.XMirror
		if t.Reason == "" {
			t.Reason = ReasonNoMirrors
		}
	}
	o.mirror, o.reason, o.country = t.Mirror, t.Reason, t.Country
	// The three values in one array, each slice capped so that appending copies: prebuilt by the
	// router for a remembered choice, else one allocation.
	vals := t.Values
	if vals == nil || toUpstream {
		vals = &[3]string{t.Mirror, t.Reason, t.URL}
	}
	hd := w.Header()
	hd["X-Mirror"] = vals[0:1:1]
	hd["X-Mirror-Reason"] = vals[1:2:2]
	if toUpstream && up.Mode == upstream.Proxy {
		rec := newRecorder(w)
		h.opts.Proxy.Serve(rec, r, pq)
		o.status = rec.status
		return
	}
	hd["Location"] = vals[2:3:3]
	hd["Cache-Control"] = noStore
	w.WriteHeader(http.StatusTemporaryRedirect)
	o.status = http.StatusTemporaryRedirect
}

// redirect answers 307 without a body: clients follow Location and the body would only cost bytes.
// The answer depends on the tag's current target and on the client's address, so no shared cache
// may keep it.
func redirect(w http.ResponseWriter, loc []string) {
	hd := w.Header()
	hd["Location"] = loc
	hd["Cache-Control"] = noStore
	w.WriteHeader(http.StatusTemporaryRedirect)
}

func (h *Handler) serveOther(w *recorder, r *http.Request, path string) {
	if hd, ok := h.opts.Mount[path]; ok {
		hd.ServeHTTP(w, r)
		return
	}
	switch path {
	case "/":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.index.serve(w, r, h.opts.ClientAddr(r))
	case "/healthz":
		plain(w, r, http.StatusOK, "ok\n")
	case "/readyz":
		if h.opts.Ready != nil {
			if err := h.opts.Ready(); err != nil {
				h.log.LogAttrs(r.Context(), slog.LevelWarn, "not ready", slog.String("err", err.Error()))
				plain(w, r, http.StatusServiceUnavailable, "not ready\n")
				return
			}
		}
		plain(w, r, http.StatusOK, "ready\n")
	default:
		plain(w, r, http.StatusNotFound, "404 page not found\n")
	}
}

func plain(w http.ResponseWriter, r *http.Request, status int, body string) {
	hd := w.Header()
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
}

// recorder passes an answer written by another handler through and notes its status.
type recorder struct {
	http.ResponseWriter
	status int
}

func newRecorder(w http.ResponseWriter) *recorder {
	return &recorder{ResponseWriter: w, status: http.StatusOK}
}

func (w *recorder) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
