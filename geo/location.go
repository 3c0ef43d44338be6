// Package geo answers "where is this client?": the client's address behind trusted proxies, its
// country, continent, coordinates and AS number from MaxMind databases, and the networks and cloud
// regions it belongs to from explicit rules. It knows nothing of mirrors or HTTP routing.
package geo

import "net/netip"

// Location is what is known about a client address. Fields that are unknown keep their zero value.
type Location struct {
	Addr      netip.Addr
	Country   string // ISO 3166-1 alpha-2, upper case ("DE"); "" when unknown
	Continent string // two-letter continent code (AF AN AS EU NA OC SA); "" when unknown
	Lat, Lon  float64
	HasCoords bool
	ASN       uint32 // 0 when unknown

	// Tags are the network rules the address falls in: "net:<mirror name>" for a mirror's own
	// `networks`, "<cloud>:<region>" (for example "aws:us-east-1") for published cloud ranges.
	Tags []string
}

// NetTag is the tag of the addresses in a mirror's own `networks`.
func NetTag(mirror string) string { return netTagPrefix + mirror }

const netTagPrefix = "net:"

// Known reports whether anything beyond the address was found.
func (l Location) Known() bool {
	return l.Country != "" || l.Continent != "" || l.HasCoords || len(l.Tags) > 0
}

// HasTag reports whether t is one of l.Tags.
func (l Location) HasTag(t string) bool {
	for _, x := range l.Tags {
		if x == t {
			return true
		}
	}
	return false
}

// NormalizeAddr gives one spelling per host: a dual-stack listener reports IPv4 clients as
// ::ffff:a.b.c.d, and zones only make sense on the machine that printed them.
func NormalizeAddr(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }
