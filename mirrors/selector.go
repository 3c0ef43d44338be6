package mirrors

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/happy-turtle/oci-proxy/geo"
	"github.com/happy-turtle/oci-proxy/internal/brief"
	"github.com/happy-turtle/oci-proxy/oci"
)

// Options tune a Selector. The zero value of every field means its documented default.
type Options struct {
	// Timeout bounds one presence check or one URL request to a backend: 2s when zero. A whole
	// choice never takes more than twice as long before it answers with the upstream.
	Timeout time.Duration
	// HitTTL is how long a blob found on a mirror is remembered: 24h when zero. Blobs are
	// immutable, so only a deletion from the bucket makes this stale.
	HitTTL time.Duration
	// MissTTL is how long an absent blob is remembered: 30s when zero, short so that a blob
	// copied by sync is used soon after.
	MissTTL time.Duration
	// CacheSize bounds the presence cache in entries (one per mirror and blob): 100000 when zero.
	CacheSize int
	// HealthAfter is the number of consecutive failed checks after which a mirror is set aside:
	// 3 when zero.
	HealthAfter int
	// Backoff is how long a failing mirror is set aside before it is tried again: 10s when zero.
	// It doubles while the retries fail, up to maxBackoff.
	Backoff time.Duration
	// ProbeInterval is how often Run checks each mirror, so that a dead mirror is noticed even
	// while every request is answered from the caches: 3s when zero.
	ProbeInterval time.Duration
	// MaxChecksPerSecond is each mirror's budget of presence checks for blobs the cache does not
	// know: a token bucket refilled at this rate and holding one second's worth. A check beyond
	// it is not made: the request skips the mirror at once, for the next candidate or the
	// upstream (ReasonBusy), and nothing is cached, so the blob is asked about again once there
	// is budget. Blobs known to be on the mirror never wait for it. DefaultMaxChecksPerSecond
	// when zero; negative: no budget.
	//
	// Anyone can ask for made-up digests, and each one costs a check at the best mirror, so
	// without a budget a flood of requests becomes a flood of HEADs that slows the mirror's
	// answers for everyone. A real pull asks about each blob once (concurrent checks of one
	// blob are merged and the answers cached), so even many nodes starting different images at
	// once need a few hundred checks, spread over seconds.
	MaxChecksPerSecond int
	// Unlocated is where the blobs of a client that cannot be located go: UnlocatedMirrors
	// (the zero value) or UnlocatedUpstream.
	Unlocated Unlocated
	// Clock returns the current time for cache expiry and health: time.Now when nil. Timeouts of
	// network calls always use real time.
	Clock func() time.Time
	// Logger receives health changes: nothing is logged when nil.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Timeout, 2*time.Second)
	def(&o.HitTTL, 24*time.Hour)
	def(&o.MissTTL, 30*time.Second)
	def(&o.Backoff, 10*time.Second)
	def(&o.ProbeInterval, 3*time.Second)
	switch {
	case o.MaxChecksPerSecond == 0:
		o.MaxChecksPerSecond = DefaultMaxChecksPerSecond
	case o.MaxChecksPerSecond < 0:
		o.MaxChecksPerSecond = 0 // no budget
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 100000
	}
	if o.HealthAfter <= 0 {
		o.HealthAfter = 3
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// DefaultMaxChecksPerSecond is Options.MaxChecksPerSecond's default: enough for the cold start of
// a real pull burst; a fraction of what a flood asks (2,260 requests a second for made-up digests
// made 1,130 HEADs a second at one mirror and slowed its answers past 2 s); far below the
// thousands of reads a second that S3 and GCS serve per prefix; and, at their request prices
// (0.4 USD a million), at most about 7 USD a day per mirror however long a flood lasts.
const DefaultMaxChecksPerSecond = 200

// Unlocated is where the blobs of a client that cannot be located (no GeoIP answer, no network
// rule) go.
type Unlocated uint8

const (
	// UnlocatedMirrors ranks the mirrors without a scope by weight alone (ReasonNoGeo): a
	// client nobody can place is still served by the mirrors that may serve anyone.
	UnlocatedMirrors Unlocated = iota
	// UnlocatedUpstream sends them to the upstream (ReasonNoGeo), as a proxy without mirrors
	// would.
	UnlocatedUpstream
)

func (u Unlocated) String() string {
	if u == UnlocatedUpstream {
		return "upstream"
	}
	return "mirrors"
}

// Fixed tunings. They are not options: no deployment has needed another value, and each is
// explained where it is used.
const (
	// urlCacheSize bounds the cache of signed URLs: one per mirror, blob and method, reused for
	// half their lifetime, so hot blobs stay signed and a scan of cold ones cannot grow it.
	urlCacheSize = 10000
	// maxBackoff caps the doubling of Options.Backoff: a mirror that has failed for long is
	// still retried every few minutes, so it comes back by itself.
	maxBackoff = 5 * time.Minute
	// tieKm is the distance within which mirrors count as equally near and share clients by
	// weight: two data centres of one metro area are one place to a client.
	tieKm = 50.0
)

// Query is one blob request to place.
type Query struct {
	Loc    geo.Location
	Digest oci.Digest
	Method string // GET or HEAD; anything else is treated as GET
}

// Decision is where a blob request goes.
type Decision struct {
	Mirror string   // "" means the upstream
	URL    *url.URL // nil for the upstream; shared between requests, so never modify it
	// Location is URL as a string, rendered once per URL rather than once per request.
	Location string
	Reason   string // the X-Mirror-Reason value, one of the Reason constants
	Size     int64  // from the presence check; -1 when unknown
	Expires  time.Time
	// Missed is the mirror that ranked first for the client but lacked the blob (its presence
	// check said absent, not failed or skipped): demand for a copy there. "" otherwise.
	Missed string
	// DistanceKm is the great-circle distance from the client to Mirror; negative when the
	// upstream serves or either place is unknown.
	DistanceKm float64
	// Values is {Mirror, Reason, Location}, built once for a decision the decision cache keeps and
	// shared by every answer from it, so that the headers cost no allocation; nil otherwise.
	// Never modify it.
	Values *[3]string
}

// The reasons a Decision gives. A mirror was chosen for the first rank it won on; the fallbacks
// say why the upstream (or, for ReasonNoGeo with UnlocatedMirrors, a mirror picked by weight
// alone) serves the blob.
const (
	ReasonNetwork   = "network"   // the client is in the mirror's networks or cloud region
	ReasonCountry   = "country"   // the mirror is in the client's country
	ReasonContinent = "continent" // the mirror is on the client's continent
	ReasonDistance  = "distance"  // the nearest by great-circle distance
	ReasonWeight    = "weight"    // nothing known to prefer one mirror: by weight

	ReasonNoGeo      = "fallback:no-geo"      // the client could not be located: unscoped mirrors by weight, or the upstream (Options.Unlocated)
	ReasonNotPresent = "fallback:not-present" // no candidate holds the blob
	ReasonNoMirror   = "fallback:no-mirror"   // no enabled mirror may serve this client
	ReasonUnhealthy  = "fallback:unhealthy"   // every mirror that may serve the client is set aside (failures, refused credentials)
	ReasonError      = "fallback:error"       // a check failed or timed out and no other candidate holds the blob
	ReasonBusy       = "fallback:busy"        // the candidates not known to lack the blob had spent their budget of checks, or asked to be paced
)

// Selector chooses mirrors. It is safe for concurrent use; the mirror table is fixed at
// construction (a reload builds a new Selector).
type Selector struct {
	mirrors []*Mirror
	state   []mirrorState
	opts    Options
	log     *slog.Logger
	now     func() time.Time

	seed     maphash.Seed
	presence *cache[presenceKey, Object]
	urls     *cache[urlKey, signedURL]
	flights  singleflight.Group

	// decisions are whole warm choices (decisions.go); gen moves on whenever an entry of the
	// presence or URL cache is replaced or evicted before its expiry.
	decisions *cache[decisionKey, cachedDecision]
	gen       atomic.Uint64
}

type presenceKey struct {
	mirror int
	digest oci.Digest
}

type urlKey struct {
	mirror int
	head   bool
	digest oci.Digest
}

type signedURL struct {
	u       *url.URL
	s       string // u.String(), rendered once: a signed URL is about a kilobyte
	expires time.Time
}

// mirrorState is a mirror's health, read on every request, hence atomics rather than a lock.
type mirrorState struct {
	fails     atomic.Int32
	downUntil atomic.Int64 // unix nanoseconds; 0 while healthy
	backoff   atomic.Int64 // the current back-off, doubled by each failed retry
	probing   atomic.Bool
	lastErr   atomic.Pointer[string]
	// probe is a blob recently asked of this mirror, the object a health probe checks: unlike a
	// made-up key, it is one the mirror's permissions certainly allow asking about.
	probe atomic.Pointer[oci.Digest]
	// found is the last blob a check found on this mirror: proof, while it is still there, that
	// the mirror accepts the proxy's credentials (see checkCredentials).
	found atomic.Pointer[oci.Digest]

	// creds is what the last probe of ProbeKey said of the credentials (a credState); denied
	// is the refusal while it is credsRefused. recheckAt (unix nanoseconds) is when a request
	// may next start a check of refused credentials.
	creds     atomic.Uint32
	denied    atomic.Pointer[string]
	recheckAt atomic.Int64

	// budget limits presence checks; pacedUntil (unix nanoseconds) is when the mirror's request
	// to slow down (a *ThrottledError) ends. The counters are the checks each one skipped.
	budget        budget
	pacedUntil    atomic.Int64
	skippedBudget atomic.Uint64
	skippedPaced  atomic.Uint64
}

// NewSelector returns a Selector over ms, ranked in the order given when everything else is equal
// (which it rarely is: see Choose). Names must be unique; package config ensures they are.
func NewSelector(ms []*Mirror, opts Options) *Selector {
	opts = opts.withDefaults()
	s := &Selector{
		mirrors: ms,
		state:   make([]mirrorState, len(ms)),
		opts:    opts,
		log:     opts.Logger,
		now:     opts.Clock,
		seed:    maphash.MakeSeed(),
	}
	start := s.now().UnixNano()
	for i := range s.state {
		s.state[i].budget.init(opts.MaxChecksPerSecond, start)
	}
	s.presence = newCache[presenceKey, Object](opts.CacheSize, func(k presenceKey) uint64 {
		return maphash.String(s.seed, k.digest.Hex()) ^ uint64(k.mirror)*0x9e3779b97f4a7c15
	})
	s.urls = newCache[urlKey, signedURL](urlCacheSize, func(k urlKey) uint64 {
		h := maphash.String(s.seed, k.digest.Hex()) ^ uint64(k.mirror)*0x9e3779b97f4a7c15
		if k.head {
			h = ^h
		}
		return h
	})
	s.presence.changed = s.bumpGeneration
	s.urls.changed = s.bumpGeneration
	s.decisions = newCache[decisionKey, cachedDecision](decisionCacheSize, func(k decisionKey) uint64 {
		return maphash.String(s.seed, k.digest.Hex()) ^ uint64(k.asn)*0x9e3779b97f4a7c15 ^ addrHash(k.tiedClient)
	})
	return s
}

// Mirrors returns the mirror table. The slice is shared; do not modify it.
func (s *Selector) Mirrors() []*Mirror { return s.mirrors }

// Choose returns where q should go: the best-ranked candidate that holds the blob and gives a URL,
// else the upstream. See DESIGN.md "Choosing a mirror". It never waits more than 2 × Timeout in
// total, and a blob whose presence and URL are cached costs no network round trip.
func (s *Selector) Choose(ctx context.Context, q Query) Decision {
	// One clock read serves the whole warm choice: decision, health, presence and URL caches.
	now := s.now().UnixNano()
	dk, cacheable := s.decisionKeyOf(&q)
	gen := s.gen.Load()
	if cacheable {
		if d, ok := s.cachedChoice(dk, q.Loc.Addr, gen, now); ok {
			return d
		}
	}
	var memo decisionMemo
	d := s.choose(ctx, &q, now, &memo)
	if cacheable {
		s.remember(dk, q.Loc.Addr, gen, now, d, memo)
	}
	return d
}

// choose is Choose without the decision cache: rank, then walk. memo, when not nil, learns
// whether the decision may be cached.
func (s *Selector) choose(ctx context.Context, q *Query, now int64, memo *decisionMemo) Decision {
	var buf [16]cand
	cs := buf[:0]
	if len(s.mirrors) > len(buf) {
		cs = make([]cand, 0, len(s.mirrors))
	}
	cands, why := s.rank(q, cs, nil, now)
	if len(cands) == 0 {
		return toUpstream(why)
	}
	return s.walk(ctx, q, cands, nil, now, memo)
}

func toUpstream(reason string) Decision { return Decision{Reason: reason, Size: -1, DistanceKm: -1} }

// errBudget stops a walk that has used up its time.
var errBudget = errors.New("no time left for this request")

// walk tries cands best first. Without a trace it tries the best one before paying for a full
// sort. With a trace (Explain) it goes on checking presence after the choice is made, so that every
// mirror's state is shown.
//
// memo, when not nil, learns whether the decision may be cached (see decisions.go).
func (s *Selector) walk(ctx context.Context, q *Query, cands []cand, tr *Explanation, now int64, memo *decisionMemo) Decision {
	var (
		w      = walker{s: s, ctx: ctx, digest: q.Digest, head: q.Method == "HEAD", known: q.Loc.Known(), tr: tr, start: now}
		ah     = addrHash(q.Loc.Addr)
		tried  = -1
		chosen bool
		d      Decision
	)
	missed := ""
	if tr == nil {
		b, tied := s.best(cands, ah)
		if d, ok := w.try(&cands[b]); ok {
			if memo != nil && w.pexp != 0 && w.uexp != 0 {
				*memo = decisionMemo{ok: true, tied: tied, expires: min(w.pexp, w.uexp)}
			}
			return d
		}
		tried = cands[b].idx
		if w.absent {
			missed = s.mirrors[tried].name
		}
	}
	s.order(cands, ah, tr)
	for i := range cands {
		if cands[i].idx == tried {
			continue
		}
		if chosen {
			if tr == nil {
				break
			}
			w.check(&cands[i])
			continue
		}
		d, chosen = w.try(&cands[i])
		if tr != nil && i == 0 && !chosen && w.absent {
			missed = s.mirrors[cands[i].idx].name
		}
	}
	if !chosen {
		// An error wins over "not present": the blob may well be on the mirror that failed, and
		// that is what an operator needs to see. A check skipped for a busy mirror comes next,
		// for the same reason.
		switch {
		case w.failed:
			d = toUpstream(ReasonError)
		case w.busy:
			d = toUpstream(ReasonBusy)
		default:
			d = toUpstream(ReasonNotPresent)
		}
	}
	d.Missed = missed
	return d
}

// walker is the state of one walk over the candidates. It copies what it needs of the Query rather
// than pointing to it, which would move every Query to the heap.
type walker struct {
	s        *Selector
	ctx      context.Context
	digest   oci.Digest
	head     bool
	known    bool
	tr       *Explanation
	start    int64     // unix nanoseconds when the choice began
	deadline time.Time // set at the first network call, so a warm choice reads the clock once
	failed   bool
	busy     bool // a candidate was skipped for its budget or its pacing
	absent   bool // the last check found the blob absent
	// pexp and uexp are when the presence and URL cache entries of the last try expire; 0 when
	// either was not read from its cache.
	pexp, uexp int64
}

// now is the time for cache expiry: the choice's start until a network call has taken time, the
// clock after that.
func (w *walker) now() int64 {
	if w.deadline.IsZero() {
		return w.start
	}
	return w.s.now().UnixNano()
}

// check learns whether c holds the blob, recording the answer in the trace.
func (w *walker) check(c *cand) (Object, bool) {
	var me *MirrorExplanation
	if w.tr != nil {
		me = &w.tr.Mirrors[c.idx]
	}
	w.absent = false
	w.pexp = 0
	if w.s.mirrors[c.idx].assumed {
		w.pexp = neverExpires
		if me != nil {
			me.Presence = "assumed"
		}
		return Object{Exists: true, Size: -1}, true
	}
	obj, exp, err := w.s.present(w.ctx, c.idx, w.digest, w.now(), &w.deadline)
	cached := exp != 0
	w.pexp = exp
	switch {
	case isBusy(err):
		w.busy = true
		if me != nil {
			me.Presence, me.Excluded = "busy", w.s.busyNote(c.idx, err)
		}
		return obj, false
	case err != nil:
		w.failed = true
		if me != nil {
			me.Presence, me.Excluded = "error", "presence check failed: "+shortErr(err)
		}
		return obj, false
	case !obj.Exists:
		w.absent = true
		if me != nil {
			me.Presence, me.Cached, me.Excluded = "absent", cached, "not present"
		}
		return obj, false
	}
	if me != nil {
		me.Presence, me.Cached = "present", cached
	}
	return obj, true
}

// try returns the decision for c if it holds the blob and gives a URL.
func (w *walker) try(c *cand) (Decision, bool) {
	obj, ok := w.check(c)
	if !ok {
		return Decision{}, false
	}
	su, uexp, err := w.s.url(w.ctx, c.idx, w.head, w.digest, w.now(), &w.deadline)
	w.uexp = uexp
	if err != nil {
		w.failed = true
		if w.tr != nil {
			w.tr.Mirrors[c.idx].Excluded = "url failed: " + shortErr(err)
		}
		return Decision{}, false
	}
	if w.tr != nil {
		w.tr.Mirrors[c.idx].Chosen = true
	}
	reason := c.tier.reason()
	if !w.known {
		reason = ReasonNoGeo
	}
	km := c.km
	if math.IsInf(km, 1) {
		km = -1
	}
	return Decision{Mirror: w.s.mirrors[c.idx].name, URL: su.u, Location: su.s, Reason: reason, Size: obj.Size, Expires: su.expires, DistanceKm: km}, true
}

// present reports whether mirror i holds d, from the cache or from one merged backend check, and
// when the cache entry it came from expires (0: not from the cache). A check the mirror's budget
// or pacing refuses is an error for which isBusy is true; requests that join a check in flight
// take nothing from the budget.
func (s *Selector) present(ctx context.Context, i int, d oci.Digest, now int64, deadline *time.Time) (Object, int64, error) {
	k := presenceKey{i, d}
	if o, exp, ok := s.presence.getExp(k, now); ok {
		return o, exp, nil
	}
	v, err := s.flight(ctx, "p"+strconv.Itoa(i)+d.String(), deadline, func(fctx context.Context) (any, error) {
		if err := s.admit(i); err != nil {
			return nil, err
		}
		return s.stat(fctx, i, d)
	})
	if err != nil {
		return Object{}, 0, err
	}
	return v.(Object), 0, nil
}

// url returns a URL for d on mirror i, reusing a signed one while more than half its life is left
// so that the redirects of a busy blob cost no signing, and clients always get enough time. It
// also returns when the cache entry it came from is no longer reused (0: not from the cache).
func (s *Selector) url(ctx context.Context, i int, head bool, d oci.Digest, now int64, deadline *time.Time) (signedURL, int64, error) {
	k := urlKey{i, head, d}
	if v, exp, ok := s.urls.getExp(k, now); ok {
		return v, exp, nil
	}
	name := "u" + strconv.Itoa(i) + d.String()
	if head {
		name = "h" + name[1:]
	}
	v, err := s.flight(ctx, name, deadline, func(fctx context.Context) (any, error) {
		m := s.mirrors[i]
		method := "GET"
		if head {
			method = "HEAD"
		}
		u, exp, err := m.backend.URL(fctx, method, Key(m.prefix, d), m.signingTTL)
		if err != nil {
			err = s.describe(fctx, i, "url", err)
			s.failed(i, err)
			return nil, err
		}
		su := signedURL{u: u, s: u.String(), expires: exp}
		now := s.now()
		reuse := now.Add(s.opts.HitTTL)
		if !exp.IsZero() {
			reuse = now.Add(exp.Sub(now) / 2)
		}
		if reuse.After(now) {
			s.urls.put(k, su, reuse.UnixNano(), now.UnixNano())
		}
		return su, nil
	})
	if err != nil {
		return signedURL{}, 0, err
	}
	return v.(signedURL), 0, nil
}

// flight runs fn once for all concurrent callers with the same name. fn gets a context detached
// from the caller's cancellation, so one client hanging up does not fail the check for the others
// waiting on it, with its own Timeout. The caller waits only until its own context ends or the
// request's budget is spent.
func (s *Selector) flight(ctx context.Context, name string, deadline *time.Time, fn func(context.Context) (any, error)) (any, error) {
	if deadline.IsZero() {
		*deadline = time.Now().Add(2 * s.opts.Timeout)
	}
	left := time.Until(*deadline)
	if left <= 0 {
		return nil, errBudget
	}
	ch := s.flights.DoChan(name, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeout)
		defer cancel()
		return fn(fctx)
	})
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, errBudget
	}
}

// stat asks mirror i's backend about d, caches a definite answer and updates the mirror's health.
// A throttled answer paces the mirror and counts neither way.
func (s *Selector) stat(ctx context.Context, i int, d oci.Digest) (Object, error) {
	m, st := s.mirrors[i], &s.state[i]
	st.probe.Store(&d)
	o, err := m.backend.Stat(ctx, Key(m.prefix, d))
	if err != nil {
		var te *ThrottledError
		switch {
		case errors.Is(err, ErrDenied):
			// A bucket the proxy may not list answers 403 for a blob it lacks, and a refused
			// blob cannot be served anyway. Whether the credentials still work is ProbeKey's
			// question (checkCredentials).
			o = Object{}
		case errors.As(err, &te):
			s.pace(i, te)
			return Object{}, fmt.Errorf("%w: %w", errPaced, s.describe(ctx, i, "stat", err))
		default:
			err = s.describe(ctx, i, "stat", err)
			s.failed(i, err)
			return Object{}, err
		}
	}
	s.succeeded(i)
	ttl := s.opts.MissTTL
	if o.Exists {
		ttl = s.opts.HitTTL
		st.found.Store(&d)
	} else {
		o.Size = -1
	}
	now := s.now()
	s.presence.put(presenceKey{i, d}, o, now.Add(ttl).UnixNano(), now.UnixNano())
	return o, nil
}

// describe names the mirror and turns our own timeout into a readable error.
func (s *Selector) describe(ctx context.Context, i int, op string, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s on mirror %q: timed out after %v: %w", op, s.mirrors[i].name, s.opts.Timeout, err)
	}
	return fmt.Errorf("%s on mirror %q: %w", op, s.mirrors[i].name, err)
}

// shortErr keeps explanations readable and bounded: the innermost cause is what matters.
func shortErr(err error) string {
	switch {
	case errors.Is(err, errOverBudget):
		return "budget spent"
	case errors.Is(err, errBudget):
		return "no time left"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return brief.Error(err, 160)
}
