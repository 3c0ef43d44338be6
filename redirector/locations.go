package redirector

import (
	"hash/maphash"
	"sync/atomic"
)

// locationSlots is the size of a locationCache: enough for the tags and digests a registry's
// clients pull at any one time, and at most 256 paths and URLs of a few hundred bytes each.
const locationSlots = 256

// locationCache remembers the Location of recent manifest redirects by request path. A manifest
// redirect depends on nothing but the path and the Handler's upstream table, and clients pull the
// same few tags over and over (every node of a cluster, every CI job), so most manifest requests
// find their answer here: no parsing, no URL to build, nothing allocated.
//
// It is direct-mapped, like geo's record cache: a slot holds the last path that hashed to it, a
// read is one atomic load and a string comparison, and a path made up to push others out only
// costs its sender the ordinary path. Only paths that parsed as redirect-mode manifests are put
// in, so a hit is a path that passed every check.
type locationCache struct {
	seed  maphash.Seed
	slots [locationSlots]atomic.Pointer[location]
}

type location struct {
	path   string
	header []string // {Location}, shared by every answer: net/http only reads header values
}

func newLocationCache() *locationCache {
	return &locationCache{seed: maphash.MakeSeed()}
}

func (c *locationCache) slot(path string) *atomic.Pointer[location] {
	return &c.slots[maphash.String(c.seed, path)%locationSlots]
}

// get returns the Location header value for path, or nil.
func (c *locationCache) get(path string) []string {
	if e := c.slot(path).Load(); e != nil && e.path == path {
		return e.header
	}
	return nil
}

// put remembers loc as the Location for path and returns it as a header value.
func (c *locationCache) put(path, loc string) []string {
	e := &location{path: path, header: []string{loc}}
	c.slot(path).Store(e)
	return e.header
}
