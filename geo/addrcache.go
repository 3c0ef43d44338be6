package geo

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
)

// addrCacheBits sets the size of an addrCache: 4096 slots, 32 KiB of pointers per database.
const addrCacheBits = 12

// addrCache remembers the Location of the last addresses looked up, so that the blob requests of
// one pull (a few to dozens from the same address within seconds) walk the databases' search
// trees once: the walks, two per lookup with an ASN database, are most of what a lookup costs
// once records are cached (recordCache).
//
// Like recordCache it is direct-mapped: a slot holds the last address that hashed to it, so it is
// bounded without bookkeeping, a hit is one atomic load and a comparison, and a miss costs one
// allocation of 48 bytes: an entry points at the records, which the record caches hold anyway.
// Answers never change for a given database; a reload builds new databases and with them a new
// cache.
type addrCache struct {
	slots [1 << addrCacheBits]atomic.Pointer[addrEntry]
}

// addrEntry is an address and its records; nil for a record the database does not have.
type addrEntry struct {
	addr netip.Addr
	city *cached[cityRecord]
	asn  *cached[asnRecord]
}

func (c *addrCache) slot(a netip.Addr) *atomic.Pointer[addrEntry] {
	b := a.As16()
	h := binary.LittleEndian.Uint64(b[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(b[8:])*0xc2b2ae3d27d4eb4f
	h ^= h >> 29
	return &c.slots[(h*0x9e3779b97f4a7c15)>>(64-addrCacheBits)]
}

// get returns the entry of a (a normalised address), nil when it is not cached.
func (c *addrCache) get(a netip.Addr) *addrEntry {
	if e := c.slot(a).Load(); e != nil && e.addr == a {
		return e
	}
	return nil
}

// put remembers e.
func (c *addrCache) put(e *addrEntry) {
	c.slot(e.addr).Store(e)
}
