package geo

import "net/netip"

// Locator combines GeoIP with network rules. It holds no state of its own: a reload builds a new
// Locator from the new GeoIP and NetworkTable.
type Locator struct {
	geoip *GeoIP
	nets  *NetworkTable
}

// NewLocator returns a Locator; either part may be nil, and then contributes nothing.
func NewLocator(g *GeoIP, nets *NetworkTable) *Locator {
	return &Locator{geoip: g, nets: nets}
}

// Locate returns what is known about addr: GeoIP's answer, plus the tags of every network rule
// containing it. Tags are shared with the table and must not be modified.
func (l *Locator) Locate(addr netip.Addr) Location {
	if l == nil {
		return Location{Addr: NormalizeAddr(addr)}
	}
	loc := l.geoip.Lookup(addr)
	loc.Tags = l.nets.Lookup(loc.Addr)
	return loc
}
