package mirrors

import (
	"slices"
	"sync"
	"sync/atomic"
)

// cache is a bounded map with per-entry expiry, evicting by CLOCK (second chance), an
// approximation of LRU that lets a lookup take only a read lock: a hit sets a flag instead of
// moving the entry in a list. It is split in shards so that concurrent requests for different
// blobs rarely touch the same lock.
type cache[K comparable, V any] struct {
	hash   func(K) uint64
	shards []shard[K, V]
	mask   uint64
	// changed, when set, is called (under the shard's lock) whenever an entry is replaced or
	// evicted before its expiry: what was read from the cache may no longer be what it holds.
	changed func()
}

type shard[K comparable, V any] struct {
	mu    sync.RWMutex
	m     map[K]*entry[K, V]
	ring  []*entry[K, V] // grows up to limit, then entries are replaced in place
	limit int
	hand  int
}

// entry is immutable once published except for ref; a Put replaces the whole entry, so readers
// may use it after releasing the lock.
type entry[K comparable, V any] struct {
	key     K
	val     V
	expires int64 // unix nanoseconds
	slot    int
	ref     atomic.Bool
}

// minShard keeps shards large enough that the bound stays close to the configured size, and small
// caches (tests) exact.
const (
	maxShards = 16
	minShard  = 1024
)

func newCache[K comparable, V any](size int, hash func(K) uint64) *cache[K, V] {
	if size < 1 {
		size = 1
	}
	n := 1
	for n < maxShards && size/(n*2) >= minShard {
		n *= 2
	}
	c := &cache[K, V]{hash: hash, shards: make([]shard[K, V], n), mask: uint64(n - 1)}
	per := (size + n - 1) / n
	for i := range c.shards {
		// Nothing is allocated ahead: a cache of 100,000 entries would otherwise hold 800 KB of
		// empty ring from the start, which the garbage collector scans on every cycle. The rings
		// and maps grow with use instead.
		c.shards[i].m = make(map[K]*entry[K, V])
		c.shards[i].limit = per
	}
	return c
}

func (c *cache[K, V]) shard(k K) *shard[K, V] {
	return &c.shards[c.hash(k)&c.mask]
}

// get returns the value stored for k if it has not expired at now.
func (c *cache[K, V]) get(k K, now int64) (V, bool) {
	v, _, ok := c.getExp(k, now)
	return v, ok
}

// getExp is get that also returns when the value expires.
func (c *cache[K, V]) getExp(k K, now int64) (V, int64, bool) {
	s := c.shard(k)
	s.mu.RLock()
	e := s.m[k]
	s.mu.RUnlock()
	if e == nil || now >= e.expires {
		var zero V
		return zero, 0, false
	}
	// Only write when needed: an unconditional store would bounce the cache line between cores
	// for every hit on a hot blob.
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	return e.val, e.expires, true
}

// put stores v for k until expires, evicting an expired or not recently used entry when full.
func (c *cache[K, V]) put(k K, v V, expires, now int64) {
	s := c.shard(k)
	ne := &entry[K, V]{key: k, val: v, expires: expires}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.m[k]; old != nil {
		if c.changed != nil && old.expires > now {
			c.changed()
		}
		ne.slot = old.slot
		s.ring[ne.slot] = ne
		s.m[k] = ne
		return
	}
	if len(s.ring) < s.limit {
		if len(s.ring) == cap(s.ring) {
			// Doubling, but never past the limit.
			s.ring = slices.Grow(s.ring, min(max(len(s.ring), 8), s.limit-len(s.ring)))
		}
		ne.slot = len(s.ring)
		s.ring = append(s.ring, ne)
		s.m[k] = ne
		return
	}
	// Two turns at most: the first clears every ref flag it passes.
	for {
		e := s.ring[s.hand]
		if e.expires <= now || !e.ref.Load() {
			if c.changed != nil && e.expires > now {
				c.changed()
			}
			delete(s.m, e.key)
			ne.slot = s.hand
			s.ring[s.hand] = ne
			s.m[k] = ne
			s.hand = (s.hand + 1) % len(s.ring)
			return
		}
		e.ref.Store(false)
		s.hand = (s.hand + 1) % len(s.ring)
	}
}

// len returns the number of stored entries, expired ones included.
func (c *cache[K, V]) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
