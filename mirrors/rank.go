package mirrors

import (
	"cmp"
	"encoding/binary"
	"math"
	"net/netip"
	"slices"

	"github.com/happy-turtle/oci-proxy/geo"
)

// tier is the first ranking rule a mirror wins for a client; lower is better.
type tier uint8

const (
	tierNetwork tier = iota
	tierCountry
	tierContinent
	tierDistance
	tierNone
)

func (t tier) reason() string {
	switch t {
	case tierNetwork:
		return ReasonNetwork
	case tierCountry:
		return ReasonCountry
	case tierContinent:
		return ReasonContinent
	case tierDistance:
		return ReasonDistance
	}
	return ReasonWeight
}

// cand is a mirror that may serve the client, with what ranks it.
type cand struct {
	idx        int
	lastResort bool // weight 0
	tier       tier
	km         float64 // +Inf when either place is unknown
	score      float64 // weighted rendezvous score: higher wins among equals
	place      uint64  // (lastResort, tier, km) packed so that one integer comparison orders them
}

// placeKey packs the ranking keys into one integer: the bits of a non-negative float64 (+Inf
// included) order like the number, and dropping the lowest four of them merges only distances
// closer than a nanometre.
func placeKey(lastResort bool, t tier, km float64) uint64 {
	k := uint64(t)<<59 | math.Float64bits(km)>>4
	if lastResort {
		k |= 1 << 63
	}
	return k
}

// rank returns the mirrors that may serve q appended to buf, in table order; with none, the reason
// the upstream serves instead. With a trace it records every exclusion. order and best put them in
// order.
func (s *Selector) rank(q *Query, buf []cand, tr *Explanation, now int64) ([]cand, string) {
	loc := &q.Loc
	var client geo.Point
	if loc.HasCoords {
		client = geo.PointAt(loc.Lat, loc.Lon)
	}
	if s.opts.Unlocated == UnlocatedUpstream && !loc.Known() {
		if tr != nil {
			for i, m := range s.mirrors {
				tr.Mirrors[i].Excluded = "client not located (unlocated: upstream)"
				if !m.enabled {
					tr.Mirrors[i].Excluded = "disabled"
				}
			}
		}
		return buf, ReasonNoGeo
	}
	inScope, unhealthy := 0, 0
	for i, m := range s.mirrors {
		if !m.enabled {
			if tr != nil {
				tr.Mirrors[i].Excluded = "disabled"
			}
			continue
		}
		if sc := m.scopeOf(loc); sc != inScopeOK {
			if tr != nil {
				tr.Mirrors[i].Excluded = m.scopeReason(sc)
			}
			continue
		}
		inScope++
		if !s.usable(i, now, q.Digest) {
			unhealthy++
			if tr != nil {
				tr.Mirrors[i].Excluded = s.outReason(i)
			}
			continue
		}
		c := cand{idx: i, lastResort: m.weight == 0, km: math.Inf(1)}
		c.tier = tierOf(m, loc)
		if m.hasLoc && loc.HasCoords {
			c.km = client.DistanceKm(m.point)
		}
		c.place = placeKey(c.lastResort, c.tier, c.km)
		buf = append(buf, c)
	}
	if len(buf) == 0 {
		if unhealthy > 0 {
			return buf, ReasonUnhealthy
		}
		return buf, ReasonNoMirror
	}
	return buf, ""
}

// order sorts cands best first and, with a trace, records their ranks.
//
// The order is: weight 0 last (a last resort, whatever its place), then tier, then distance;
// mirrors in the same tier whose distances differ by at most tieKm from the nearest of them (or
// are all unknown) are equals, and among equals the weighted rendezvous score of (client address,
// mirror name) decides. The score depends on nothing but those two, so a client keeps its mirror
// across the requests of one pull and across replicas, each mirror gets clients in proportion to
// its weight, and removing a mirror moves only its own clients.
func (s *Selector) order(cands []cand, addr uint64, tr *Explanation) {
	for i := range cands {
		cands[i].score = rendezvous(addr, s.mirrors[cands[i].idx])
	}
	slices.SortFunc(cands, byPlace)
	for start := 0; start < len(cands); {
		end := start + 1
		for end < len(cands) && s.equal(&cands[start], &cands[end]) {
			end++
		}
		if end-start > 1 {
			slices.SortFunc(cands[start:end], byScore)
		}
		start = end
	}
	if tr == nil {
		return
	}
	for pos, c := range cands {
		me := &tr.Mirrors[c.idx]
		me.Position = pos + 1
		me.Tier = c.tier.reason()
		if !math.IsInf(c.km, 1) {
			km := math.Round(c.km*10) / 10
			me.DistanceKm = &km
		}
		me.Score = math.Round(c.score*1000) / 1000
	}
}

// best returns the index in cands of the candidate order would put first, in one pass and without
// sorting: most requests are served by it, and sorting is only needed when it fails. tied reports
// that it shares its place with equals, so that the client's address chose it.
func (s *Selector) best(cands []cand, addr uint64) (win int, tied bool) {
	head := 0
	for i := 1; i < len(cands); i++ {
		if byPlace(cands[i], cands[head]) < 0 {
			head = i
		}
	}
	win = -1
	for i := range cands {
		c := &cands[i]
		if i != head && !s.equal(&cands[head], c) {
			continue
		}
		tied = tied || i != head
		c.score = rendezvous(addr, s.mirrors[c.idx])
		if win < 0 || byScore(*c, cands[win]) < 0 {
			win = i
		}
	}
	return win, tied
}

func byPlace(a, b cand) int { return cmp.Compare(a.place, b.place) }

func byScore(a, b cand) int {
	if c := cmp.Compare(b.score, a.score); c != 0 {
		return c
	}
	return cmp.Compare(a.idx, b.idx)
}

// equal reports whether b ranks the same as a, the head of its group of equals (so a.km <= b.km).
func (s *Selector) equal(a, b *cand) bool {
	if a.lastResort != b.lastResort || a.tier != b.tier {
		return false
	}
	if math.IsInf(a.km, 1) || math.IsInf(b.km, 1) {
		return math.IsInf(a.km, 1) && math.IsInf(b.km, 1)
	}
	return b.km-a.km <= tieKm
}

func tierOf(m *Mirror, loc *geo.Location) tier {
	if len(loc.Tags) > 0 {
		if loc.HasTag(m.netTag) {
			return tierNetwork
		}
		for _, r := range m.cloudRegions {
			if loc.HasTag(r) {
				return tierNetwork
			}
		}
	}
	if loc.ASN != 0 && slices.Contains(m.asns, loc.ASN) {
		return tierNetwork
	}
	switch {
	case m.country != "" && m.country == loc.Country:
		return tierCountry
	case m.continent != "" && m.continent == loc.Continent:
		return tierContinent
	case m.hasLoc && loc.HasCoords:
		return tierDistance
	}
	return tierNone
}

// addrHash folds a client address into 64 bits. IPv4-mapped addresses hash like IPv4 so that a
// dual-stack listener does not split one client in two.
func addrHash(a netip.Addr) uint64 {
	if !a.IsValid() {
		return 0
	}
	b := a.Unmap().As16()
	return mix64(binary.BigEndian.Uint64(b[:8]) ^ mix64(binary.BigEndian.Uint64(b[8:])))
}

// rendezvous returns the weighted rendezvous (highest random weight) score of a mirror for a
// client: w / -ln(u) with u uniform in (0,1) from the pair's hash, which makes the chance of
// winning exactly proportional to w. A last-resort mirror (weight 0) scores as weight 1 among
// the other last resorts.
func rendezvous(addr uint64, m *Mirror) float64 {
	w := float64(max(m.weight, 1))
	h := mix64(addr ^ m.nameHash)
	u := (float64(h>>11) + 0.5) / (1 << 53)
	return w / -math.Log(u)
}

// mix64 is the splitmix64 finalizer: cheap, and fixed across processes, which the stable choice
// per client needs.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
