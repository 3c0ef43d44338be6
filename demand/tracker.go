// Package demand counts and reads demand for copies: blob requests whose first-ranked mirror
// lacked the blob. Tracker keeps one replica's recent misses in memory (GET /_/demand); Data is
// demand gathered from anywhere (a Prometheus server, the /_/demand of several replicas), and
// the functions on it decide what `oci-proxy sync --demand` copies and what `oci-proxy demand`
// reports.
//
// It does not choose mirrors (package mirrors does) and stores nothing across restarts: across
// replicas and over time, demand is aggregated by Prometheus, not here.
package demand

import (
	"cmp"
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/happy-turtle/oci-proxy/oci"
)

// Key is one missed blob: the mirror that ranked first and lacked it, and the repository it
// was asked for in (a configured sync.repositories name, or Other).
type Key struct {
	Mirror     string
	Repository string
	Digest     oci.Digest
}

// Other stands for every repository outside sync.repositories, so that names nobody configured
// never become keys (or labels) of their own.
const Other = "other"

// TrackerOptions tune a Tracker; the zero value of each field means its default.
type TrackerOptions struct {
	// Size bounds the entries kept: DefaultTrackerSize when zero.
	Size int
	// HalfLife is how fast counts fade: DefaultHalfLife when zero. A count is the number of
	// misses, each weighted by 2^(-age/HalfLife).
	HalfLife time.Duration
	// Clock is time.Now when nil.
	Clock func() time.Time
}

// DefaultTrackerSize keeps the hottest misses of a busy replica (a pull is a few blobs, a
// popular image a few dozen) in about 200 bytes each: 2,048 entries, under half a megabyte.
const DefaultTrackerSize = 2048

// DefaultHalfLife makes a miss count for an hour, half as much the next: demand a sync round
// every hour or so can act on, and that fades once a copy serves it.
const DefaultHalfLife = time.Hour

// shards split the tracker's lock: misses come from every request goroutine at once.
const shards = 16

// evictSample is how many entries a full shard looks at to find one to drop: the least of a
// random sample (as Redis does for LFU) costs O(1) per miss and keeps the heavy hitters, which
// is all a top-N needs.
const evictSample = 8

// Tracker keeps the most missed (mirror, repository, digest) entries of this replica, with
// counts that decay. It is safe for concurrent use; Miss takes one shard's lock briefly and
// allocates only for a new entry. Memory is bounded by Size entries.
type Tracker struct {
	shards   [shards]shard
	perShard int
	halfLife float64 // nanoseconds
	now      func() time.Time
	seed     maphash.Seed
}

type shard struct {
	mu sync.Mutex
	m  map[Key]*entry
}

type entry struct {
	count float64
	at    int64 // unix nanoseconds of the last update of count
}

// NewTracker returns an empty Tracker.
func NewTracker(o TrackerOptions) *Tracker {
	if o.Size <= 0 {
		o.Size = DefaultTrackerSize
	}
	if o.HalfLife <= 0 {
		o.HalfLife = DefaultHalfLife
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	t := &Tracker{perShard: max(1, (o.Size+shards-1)/shards), halfLife: float64(o.HalfLife), now: o.Clock, seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[Key]*entry)
	}
	return t
}

// HalfLife is the tracker's half-life.
func (t *Tracker) HalfLife() time.Duration { return time.Duration(t.halfLife) }

// decayed is e's count at now.
func (t *Tracker) decayed(e *entry, now int64) float64 {
	if now <= e.at {
		return e.count
	}
	return e.count * math.Exp2(-float64(now-e.at)/t.halfLife)
}

// Miss counts one miss of k.
func (t *Tracker) Miss(k Key) {
	now := t.now().UnixNano()
	sh := &t.shards[maphash.String(t.seed, k.Digest.Hex())%shards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.m[k]; ok {
		e.count = t.decayed(e, now) + 1
		e.at = now
		return
	}
	if len(sh.m) >= t.perShard {
		var (
			victim Key
			least  = math.Inf(1)
			n      int
		)
		for vk, e := range sh.m { // Go starts each walk of a map at a random place
			if c := t.decayed(e, now); c < least {
				victim, least = vk, c
			}
			if n++; n == evictSample {
				break
			}
		}
		delete(sh.m, victim)
	}
	sh.m[k] = &entry{count: 1, at: now}
}

// Entry is a tracked miss with its decayed count.
type Entry struct {
	Key
	Count float64
}

// Top returns up to n entries, most missed first (ties by mirror, repository, digest).
func (t *Tracker) Top(n int) []Entry {
	now := t.now().UnixNano()
	var out []Entry
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			out = append(out, Entry{Key: k, Count: t.decayed(e, now)})
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Mirror, b.Mirror); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Repository, b.Repository); c != 0 {
			return c
		}
		return cmp.Compare(a.Digest.String(), b.Digest.String())
	})
	if n >= 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// MirrorTotals returns each mirror's decayed miss count, summed over the entries kept: how much
// demand this replica saw for blobs a mirror lacks (for the index page's mirror table).
func (t *Tracker) MirrorTotals() map[string]float64 {
	totals := map[string]float64{}
	for _, e := range t.Top(-1) {
		totals[e.Mirror] += e.Count
	}
	return totals
}
