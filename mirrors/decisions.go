package mirrors

import (
	"math"
	"net/netip"

	"github.com/happy-turtle/oci-proxy/oci"
)

// The decision cache remembers whole warm choices, so that a blob redirect for a client the
// Selector has already placed skips ranking: scope, tiers, distances and the rendezvous among
// equals (together a few per cent of a redirect's CPU). It gives exactly the answers Choose would:
//
//   - The key holds everything the ranking reads of the client (address family, country,
//     continent, coordinates, ASN) with the digest and the method, and the client's address only
//     where equals share the best place (the rendezvous between them reads it). A located client
//     with network tags (a mirror's `networks`, cloud ranges) is not cached: those are rare.
//   - Only a choice of the best-ranked candidate made from the presence and URL caches is kept,
//     until the first of those two entries expires.
//   - Only while every mirror is healthy, with its credentials not refused: whether a mirror is
//     usable changes with time and health, and the cache is not read while any is not.
//   - Every entry carries the generation of the presence and URL caches when the choice began; any
//     entry of those replaced or evicted before its expiry moves the generation on, so an answer
//     that might have changed is never served from here. A reload builds a new Selector, and with
//     it an empty cache.

// decisionCacheSize bounds the decision cache: one entry per client place, blob and method in
// use, about 300 bytes each; the rings grow with use, so an idle service holds none.
const decisionCacheSize = 4096

type decisionKey struct {
	digest     oci.Digest
	head       bool
	family     uint8 // 4, 6, or 0 for no address
	hasCoords  bool
	asn        uint32
	lat, lon   float64
	country    string
	continent  string
	tiedClient netip.Addr // the client's address when equals share the best place; zero otherwise
}

type cachedDecision struct {
	d    Decision
	gen  uint64
	tied bool // a marker: equals share the best place here, look again with the client's address
}

// decisionMemo is what walk says of a decision, for the cache.
type decisionMemo struct {
	ok      bool // the best candidate, from the caches
	tied    bool
	expires int64
}

func (s *Selector) bumpGeneration() { s.gen.Add(1) }

// decisionKeyOf returns q's key, and whether q may use the cache at all.
func (s *Selector) decisionKeyOf(q *Query) (decisionKey, bool) {
	if len(q.Loc.Tags) > 0 {
		return decisionKey{}, false
	}
	for i := range s.state {
		st := &s.state[i]
		if st.downUntil.Load() != 0 || credState(st.creds.Load()) == credsRefused {
			return decisionKey{}, false
		}
	}
	k := decisionKey{
		digest:    q.Digest,
		head:      q.Method == "HEAD",
		hasCoords: q.Loc.HasCoords,
		asn:       q.Loc.ASN,
		country:   q.Loc.Country,
		continent: q.Loc.Continent,
	}
	if k.hasCoords {
		k.lat, k.lon = q.Loc.Lat, q.Loc.Lon
	}
	switch a := q.Loc.Addr.Unmap(); {
	case a.Is4():
		k.family = 4
	case a.Is6():
		k.family = 6
	}
	return k, true
}

// cachedChoice returns the cached decision for k, if any is valid at gen and now.
func (s *Selector) cachedChoice(k decisionKey, client netip.Addr, gen uint64, now int64) (Decision, bool) {
	e, ok := s.decisions.get(k, now)
	if !ok || e.gen != gen {
		return Decision{}, false
	}
	if e.tied {
		k.tiedClient = client.Unmap()
		if e, ok = s.decisions.get(k, now); !ok || e.gen != gen || e.tied {
			return Decision{}, false
		}
	}
	return e.d, true
}

// remember keeps d for k, as memo allows.
func (s *Selector) remember(k decisionKey, client netip.Addr, gen uint64, now int64, d Decision, memo decisionMemo) {
	if !memo.ok || memo.expires <= now {
		return
	}
	if memo.tied {
		s.decisions.put(k, cachedDecision{gen: gen, tied: true}, memo.expires, now)
		k.tiedClient = client.Unmap()
	}
	d.Values = &[3]string{d.Mirror, d.Reason, d.Location}
	s.decisions.put(k, cachedDecision{d: d, gen: gen}, memo.expires, now)
}

// neverExpires is the presence expiry of a mirror whose blobs are assumed.
const neverExpires = math.MaxInt64
