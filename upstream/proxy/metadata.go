package proxy

import (
	"context"
	"log/slog"
	"net/http"

	"golang.org/x/sync/singleflight"
)

// answer is one answer as the client sees it. It is immutable once built: a cached answer is
// shared by every request it serves.
type answer struct {
	status int
	// header is replayed with the body: Content-Type, Content-Length, Docker-Content-Digest,
	// ETag, and per kind Link or OCI-Filters-Applied.
	header http.Header
	body   []byte
	// live headers belong to this one upstream answer (rate limits, Retry-After) and are never
	// replayed from the cache.
	live http.Header
	// failed: the upstream was unreachable or answered 5xx, so a stale copy is better.
	failed bool
	// cause is why the proxy made this answer itself, for the log; nil for upstream answers.
	cause error
}

// result is what a shared fetch hands every request waiting on it.
type result struct {
	a     *answer
	state CacheState
}

// serveMetadata answers manifests, tag lists and referrers: from the cache when fresh, else from
// one upstream fetch shared by every identical request, else from a stale copy when the upstream
// fails.
func (p *Proxy) serveMetadata(w http.ResponseWriter, r *http.Request, q *Request) {
	key := cacheKey(q)
	old, fresh := p.cache.get(key, p.now().UnixNano())
	if old != nil && fresh {
		p.obs.Cache(q.Kind, Hit)
		p.write(w, q, old, Hit)
		return
	}
	ctx := context.WithoutCancel(r.Context())
	var ch <-chan singleflight.Result
	if q.Method == http.MethodHead && q.Kind == Manifest {
		// A GET counts as a pull on Docker Hub, a HEAD does not: a client's HEAD asks the
		// upstream for headers only, and only what a GET returned is cached.
		ch = p.flights.DoChan("H"+key, func() (any, error) { return p.head(ctx, key, q), nil })
	} else {
		ch = p.flights.DoChan(key, func() (any, error) { return p.get(ctx, key, q), nil })
	}
	var res result
	select {
	case v := <-ch:
		res = v.Val.(result)
	case <-r.Context().Done():
		return
	}
	a := res.a
	if a.failed && old != nil {
		p.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream unavailable, serving a stale answer",
			slog.String("route", q.Kind.String()), slog.String("repository", q.ClientName),
			slog.String("reference", q.reference()), slog.Any("err", a.cause))
		p.obs.Cache(q.Kind, Stale)
		p.write(w, q, old, Stale)
		return
	}
	p.logCause(r, q, a)
	p.obs.Cache(q.Kind, res.state)
	p.write(w, q, a, res.state)
}

// get fetches q with a GET and caches what may be cached. It runs once for all requests
// waiting on key.
func (p *Proxy) get(ctx context.Context, key string, q *Request) result {
	// A fetch for key may have finished between this request's cache miss and its joining the
	// flight; its answer is then in the cache.
	if a, fresh := p.cache.get(key, p.now().UnixNano()); a != nil && fresh {
		return result{a, Hit}
	}
	a := p.fetch(ctx, q)
	p.store(key, q, a)
	return result{a, Miss}
}

// store caches a when it may be cached: a 200 by digest for good, other 200s for TagTTL (and
// StaleGrace after), a 404 briefly and never stale; nothing else, 401 and 403 above all.
func (p *Proxy) store(key string, q *Request, a *answer) {
	if a.cause != nil {
		return
	}
	now := p.now().UnixNano()
	var fresh, until int64
	switch {
	case a.status == http.StatusOK && q.Kind == Manifest && !q.Digest.IsZero():
		fresh, until = forever, forever
	case a.status == http.StatusOK:
		fresh = now + int64(p.tagTTL)
		until = fresh + int64(p.grace)
	case a.status == http.StatusNotFound:
		fresh = now + int64(p.missTTL)
		until = fresh
	default:
		return
	}
	if until <= now {
		return
	}
	c := *a
	c.live = nil
	p.cache.put(key, &c, fresh, until)
}

// logCause logs why the proxy answered a itself, if it did.
func (p *Proxy) logCause(r *http.Request, q *Request, a *answer) {
	if a.cause == nil {
		return
	}
	p.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream answer not served",
		slog.String("route", q.Kind.String()), slog.String("repository", q.ClientName),
		slog.String("reference", q.reference()), slog.Int("status", a.status), slog.Any("err", a.cause))
}

// write sends a to the client: its status and headers, the body unless the request is a HEAD,
// and for metadata the X-Cache state. An upstream 401 gets the caller's challenge, if any.
func (p *Proxy) write(w http.ResponseWriter, q *Request, a *answer, state CacheState) {
	h := w.Header()
	for k, v := range a.header {
		h[k] = v
	}
	for k, v := range a.live {
		h[k] = v
	}
	if q.Kind != Blob {
		h.Set("X-Cache", state.String())
	}
	if a.status == http.StatusUnauthorized && p.challenge != nil {
		p.challenge(h, q)
	}
	w.WriteHeader(a.status)
	if q.Method != http.MethodHead && len(a.body) > 0 {
		// A client that went away is no error of the upstream's or the proxy's.
		_, _ = w.Write(a.body)
	}
}
