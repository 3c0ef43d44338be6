package auth

import (
	"sync"
	"time"
)

// ttlCache is a map with per-entry expiry and a bound on its size. Lookups take a read lock.
// A store into a full cache first drops the expired entries, a scan of the whole map, and then,
// if it is still full, one entry chosen by map iteration order, which is random. That costs
// O(size) per store when full, which is fine for what is stored here (tokens, challenges,
// credential helper answers): stores happen once per token lifetime, not per request.
type ttlCache[K comparable, V any] struct {
	mu  sync.RWMutex
	m   map[K]ttlEntry[V]
	max int
}

type ttlEntry[V any] struct {
	val     V
	expires time.Time
}

func newTTLCache[K comparable, V any](size int) *ttlCache[K, V] {
	return &ttlCache[K, V]{m: make(map[K]ttlEntry[V]), max: max(size, 1)}
}

// get returns the value stored for k if it has not expired at now.
func (c *ttlCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.val, true
}

// put stores v for k until expires.
func (c *ttlCache[K, V]) put(k K, v V, expires, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for ek, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, ek)
			}
		}
		for ek := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, ek)
		}
	}
	c.m[k] = ttlEntry[V]{val: v, expires: expires}
}

// deleteIf removes k if its value satisfies match, so that a newer value stored meanwhile by
// another request survives.
func (c *ttlCache[K, V]) deleteIf(k K, match func(V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok && match(e.val) {
		delete(c.m, k)
	}
}

func (c *ttlCache[K, V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
