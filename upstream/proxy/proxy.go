// Package proxy answers pulls for an upstream registry that demands tokens: it fetches manifests,
// tag lists and referrers from the upstream and serves them itself, and for blobs that no mirror
// holds it hands on the upstream's own redirect to its storage or streams the bytes.
//
// Redirecting a client to such an upstream would make the client ask for a token it cannot get,
// so routes in proxy mode go through here. A small cache, bounded in bytes and time, keeps a pull
// (a HEAD by tag, then GETs by digest) to about one upstream request per manifest, merges
// concurrent identical fetches, and serves a tag seen before for a grace period while the
// upstream is down.
//
// It is not an authenticator: the *http.Client it is given does the token flow, and the caller
// answers a client's missing or wrong credentials with its own challenge (Options.Challenge). It
// does not parse request paths or build upstream URLs (redirector and upstream do), does not
// choose mirrors, and never stores blob bytes: they pass through with bounded buffers.
package proxy

import (
	"crypto/sha256"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/happy-turtle/oci-proxy/oci"
	"golang.org/x/sync/singleflight"
)

// Kind is what a request asks the upstream for.
type Kind uint8

// The zero Kind is not a valid request kind.
const (
	Manifest Kind = iota + 1
	Tags
	Referrers
	Blob
)

var kindNames = [...]string{"invalid", "manifest", "tags", "referrers", "blob"}

// String is the name used in logs and metric labels.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "invalid"
}

// CacheState says how the cache served a manifest, tags or referrers request. Its String is the
// value of the X-Cache header on the answer.
type CacheState uint8

const (
	// Miss: the answer was fetched from the upstream for this request (or the fetch failed).
	Miss CacheState = iota
	// Hit: a fresh cached answer.
	Hit
	// Stale: a cached answer past its TTL, served because the upstream is unreachable or failing.
	Stale
)

var stateNames = [...]string{"miss", "hit", "stale"}

// String returns "miss", "hit" or "stale".
func (s CacheState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "miss"
}

// Request is one validated client request, already translated to the upstream. URL, names and
// references come from configuration or validated input: the proxy places them on the upstream
// request as they are.
type Request struct {
	Kind   Kind
	Method string // http.MethodGet or http.MethodHead
	// URL is the absolute upstream URL, built from a configured base and validated parts of the
	// request, e.g. https://ghcr.io/v2/acme/app/manifests/1.0 or .../tags/list?n=2&last=b.
	URL string
	// ClientName is the repository name as the client used it (tools/app). It replaces the
	// upstream's name in tag lists and Link headers, whatever the upstream calls the repository
	// (Docker Hub answers "library/nginx" for "nginx"), so the upstream's own name is not needed.
	ClientName string
	// Tag is the manifest reference when it is a tag; "" otherwise.
	Tag string
	// Digest is the manifest reference when it is a digest (immutable), the subject of a
	// referrers request or the blob's digest; zero otherwise. A manifest fetched by digest is
	// checked against it before it is served or cached.
	Digest oci.Digest
	// Accept holds the client's Accept header values. For manifests they are forwarded (the
	// usual OCI and Docker manifest and index types when empty) and are part of a tag's cache key.
	Accept []string
	// Range is the client's Range header, forwarded for blobs only.
	Range string
	// Authorization is the client's own Authorization header value on routes that relay it; ""
	// when the proxy's client uses its own credentials or none. When set it is forwarded, every
	// cache entry is keyed by a hash of it, so one client's answer never reaches another.
	Authorization string
}

// reference is the tag or digest, for logs.
func (q *Request) reference() string {
	if q.Tag != "" {
		return q.Tag
	}
	return q.Digest.String()
}

// Observer receives counts for metrics. Its methods are called on the request path, so they must
// be cheap and safe for concurrent use. Kind and CacheState are small fixed sets, fit for labels.
type Observer interface {
	// Cache is called once per manifest, tags or referrers request answered.
	Cache(k Kind, s CacheState)
	// BlobBytes is called once per blob body streamed, with the bytes written to the client
	// (fewer than announced when the transfer broke off).
	BlobBytes(n int64)
}

// Options configure a Proxy. Zero values choose the defaults documented on each field.
type Options struct {
	// Client does the upstream requests, token flow included. nil uses http.DefaultClient
	// (anonymous). It is used as given for metadata; for blobs a copy is made that does not
	// follow redirects (the upstream's redirect goes to the client) and has no overall Timeout
	// (a blob body is bounded by Timeout between reads instead).
	Client *http.Client
	// TagTTL is how long a manifest fetched by tag, a tag list or a referrers list is served
	// from the cache. 0 means 5s: a pushed tag shows within seconds, and a burst of pulls of one
	// tag costs the upstream one request. Negative: such answers are not served from the cache
	// (they are still kept for stale serving).
	TagTTL time.Duration
	// StaleGrace is how long after its TTL a tag's answer is still served, marked
	// `X-Cache: stale`, when the upstream is unreachable or answers 5xx. 0 means 5m: long enough
	// to ride out a registry's short outage, short enough that a moved tag is not hidden for
	// long. Negative turns stale serving off.
	StaleGrace time.Duration
	// MaxCacheBytes bounds the cache (bodies, keys and headers); least recently used answers go
	// first. 0 means 32 MiB, thousands of manifests. Negative turns the cache off. It bounds
	// each Proxy: one Proxy serves one upstream route, with that route's client.
	MaxCacheBytes int64
	// MaxManifestBytes bounds every metadata body read from the upstream (manifests, referrers
	// indexes, tag lists, error bodies); a larger answer is refused with 502, never cached.
	// 0 or negative means 4 MiB, the limit of the distribution registry.
	MaxManifestBytes int64
	// Timeout bounds each metadata request to the upstream, body included, and for blobs the
	// wait for the answer's headers and then for each read of the body. 0 or negative means 30s.
	Timeout time.Duration
	// Logger gets upstream failures and stale answers; nil discards.
	Logger *slog.Logger
	// Now is the clock for cache expiry; nil means time.Now.
	Now func() time.Time
	// Observer counts cache outcomes and blob bytes; nil counts nothing.
	Observer Observer
	// Challenge is called before an upstream 401 is passed to the client, with the answer's
	// header, so that the caller can set its own WWW-Authenticate (the upstream's is never
	// passed on: it names the upstream's token service, not the proxy). The proxy makes no 401
	// of its own, so this is the one place a 401 is seen. nil leaves the 401 without a challenge.
	Challenge func(h http.Header, q *Request)
}

// Default option values; see Options for the reasons.
const (
	DefaultTagTTL           = 5 * time.Second
	DefaultStaleGrace       = 5 * time.Minute
	DefaultMaxCacheBytes    = 32 << 20
	DefaultMaxManifestBytes = 4 << 20
	DefaultTimeout          = 30 * time.Second
)

// maxMissTTL bounds how long a 404 is remembered: a missing tag or digest may be pushed at any
// moment, so a miss is kept only long enough to absorb a burst of identical requests.
const maxMissTTL = 5 * time.Second

// blobBufSize is the copy buffer for streamed blobs.
const blobBufSize = 32 << 10

// Proxy serves requests for one upstream. It is safe for concurrent use.
type Proxy struct {
	client     *http.Client
	blobClient *http.Client
	tagTTL     time.Duration
	missTTL    time.Duration
	grace      time.Duration
	timeout    time.Duration
	maxBody    int64
	cache      *cache
	flights    singleflight.Group
	log        *slog.Logger
	now        func() time.Time
	obs        Observer
	challenge  func(http.Header, *Request)
	bufs       sync.Pool // *[]byte of blobBufSize
}

// New returns a Proxy with opts, defaults filled in.
func New(opts Options) *Proxy {
	p := &Proxy{
		client:    opts.Client,
		tagTTL:    opts.TagTTL,
		grace:     opts.StaleGrace,
		timeout:   opts.Timeout,
		maxBody:   opts.MaxManifestBytes,
		log:       opts.Logger,
		now:       opts.Now,
		obs:       opts.Observer,
		challenge: opts.Challenge,
	}
	if p.client == nil {
		p.client = http.DefaultClient
	}
	bc := *p.client
	bc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	bc.Timeout = 0
	p.blobClient = &bc
	switch {
	case p.tagTTL == 0:
		p.tagTTL = DefaultTagTTL
	case p.tagTTL < 0:
		p.tagTTL = 0
	}
	p.missTTL = min(p.tagTTL, maxMissTTL)
	switch {
	case p.grace == 0:
		p.grace = DefaultStaleGrace
	case p.grace < 0:
		p.grace = 0
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	if p.maxBody <= 0 {
		p.maxBody = DefaultMaxManifestBytes
	}
	size := opts.MaxCacheBytes
	switch {
	case size == 0:
		size = DefaultMaxCacheBytes
	case size < 0:
		size = 0
	}
	p.cache = newCache(size)
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.obs == nil {
		p.obs = nopObserver{}
	}
	p.bufs.New = func() any {
		b := make([]byte, blobBufSize)
		return &b
	}
	return p
}

type nopObserver struct{}

func (nopObserver) Cache(Kind, CacheState) {}
func (nopObserver) BlobBytes(int64)        {}

// Serve answers q on w. r supplies the context: when the client goes away, the proxy stops
// waiting, though a fetch shared with other clients runs on to its deadline. Every answer is
// written here, errors included, as OCI error JSON with a short cause; details go to the log.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, q Request) {
	if q.Method != http.MethodGet && q.Method != http.MethodHead {
		a := errorAnswer(http.StatusMethodNotAllowed, codeUnsupported, "only GET and HEAD are served")
		a.header["Allow"] = []string{"GET, HEAD"}
		p.write(w, &q, a, Miss)
		return
	}
	switch q.Kind {
	case Manifest, Tags, Referrers:
		p.serveMetadata(w, r, &q)
	case Blob:
		p.serveBlob(w, r, &q)
	default:
		p.log.LogAttrs(r.Context(), slog.LevelError, "proxy request of unknown kind",
			slog.Int("kind", int(q.Kind)), slog.String("repository", q.ClientName))
		p.write(w, &q, errorAnswer(http.StatusInternalServerError, codeUnknown, "internal error"), Miss)
	}
}

// cacheKey identifies an answer: kind, credential, what selects among variants, and the URL.
// A digest's manifest is the same bytes whatever the Accept header (they are checked against the
// digest), so Accept is part of the key only for tags: one entry per digest keeps the budget for
// distinct content. Tag lists carry the client's name in their body, so it is part of theirs.
func cacheKey(q *Request) string {
	var b strings.Builder
	b.Grow(1 + sha256.Size + 2 + len(q.ClientName) + len(q.URL) + 64)
	b.WriteByte(byte(q.Kind))
	if q.Authorization != "" {
		sum := sha256.Sum256([]byte(q.Authorization))
		b.Write(sum[:])
	}
	b.WriteByte(0)
	switch q.Kind {
	case Manifest:
		if q.Digest.IsZero() {
			writeAccept(&b, q.Accept)
		}
	case Tags:
		b.WriteString(q.ClientName)
	}
	b.WriteByte(0)
	b.WriteString(q.URL)
	return b.String()
}

// writeAccept writes the set of media types in values (comma-separated lists, in any order and
// split over any number of headers) in one canonical form.
func writeAccept(b *strings.Builder, values []string) {
	if len(values) == 1 && strings.IndexByte(values[0], ',') < 0 {
		b.WriteString(strings.TrimSpace(values[0]))
		return
	}
	var types []string
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				types = append(types, t)
			}
		}
	}
	slices.Sort(types)
	types = slices.Compact(types)
	for i, t := range types {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(t)
	}
}
