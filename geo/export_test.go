package geo

import "net/netip"

// LookupUncached is Lookup without the address cache, for tests and benchmarks.
func (g *GeoIP) LookupUncached(addr netip.Addr) Location {
	addr = NormalizeAddr(addr)
	return g.dbs.Load().lookup(addr).location(Location{Addr: addr})
}
