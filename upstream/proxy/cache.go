package proxy

import (
	"container/list"
	"math"
	"sync"
)

// forever is the expiry of an answer fetched by digest: its bytes cannot change.
const forever = math.MaxInt64

// entryOverhead approximates what an entry costs besides its key, body and header values: the
// map slot, list element, answer and header map.
const entryOverhead = 256

// cache holds answers by key within a byte budget, least recently used out first. One mutex
// guards it: entries are whole manifests (kilobytes), a hit is a map lookup and a list move, and
// what the cache saves is an upstream round trip, next to which this lock costs nothing.
type cache struct {
	mu    sync.Mutex
	max   int64
	used  int64
	lru   list.List // of *cached; front is the most recently used
	items map[string]*list.Element
}

type cached struct {
	key   string
	a     *answer // immutable, shared by every request it serves
	fresh int64   // unix nanoseconds: a hit before this
	until int64   // and kept for stale serving before this
	size  int64
}

// newCache returns a cache of max bytes; 0 stores nothing.
func newCache(max int64) *cache {
	return &cache{max: max, items: make(map[string]*list.Element)}
}

// get returns the answer stored for key if it is kept at now, and whether it is still fresh.
// An entry past its keeping time is dropped.
func (c *cache) get(key string, now int64) (a *answer, fresh bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.items[key]
	if el == nil {
		return nil, false
	}
	e := el.Value.(*cached)
	if now >= e.until {
		c.remove(el)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e.a, now < e.fresh
}

// put stores a for key, fresh until fresh and kept until until (unix nanoseconds), evicting the
// least recently used entries to stay within the budget. An answer larger than the whole budget
// is not stored.
func (c *cache) put(key string, a *answer, fresh, until int64) {
	size := int64(len(key)+len(a.body)) + entryOverhead
	for k, vs := range a.header {
		size += int64(len(k))
		for _, v := range vs {
			size += int64(len(v))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.items[key]; el != nil {
		c.remove(el)
	}
	if size > c.max {
		return
	}
	for c.used+size > c.max {
		c.remove(c.lru.Back())
	}
	c.items[key] = c.lru.PushFront(&cached{key: key, a: a, fresh: fresh, until: until, size: size})
	c.used += size
}

func (c *cache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*cached)
	delete(c.items, e.key)
	c.used -= e.size
}

// stats returns the number of entries and the bytes they are counted for.
func (c *cache) stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items), c.used
}
