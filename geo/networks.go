package geo

import (
	"net/netip"
	"slices"
)

// NetworkRule tags every address in Prefix with Tag.
type NetworkRule struct {
	Prefix netip.Prefix
	Tag    string
}

// NetworkTable answers which rules contain an address. It is immutable once built and safe for
// concurrent use.
//
// It is a binary trie over address bits, one per family, with nodes in a flat slice. Each node that
// ends a rule holds the complete answer for addresses whose most specific match is that node (its
// own tags, then its ancestors', deduplicated), computed once when the table is built. A lookup is
// then one walk down at most 32 or 128 levels and no allocation: thousands of cloud ranges cost the
// same as a handful.
type NetworkTable struct {
	nodes   []trieNode
	answers [][]string
	root4   int32
	root6   int32
	rules   int
}

type trieNode struct {
	child  [2]int32 // 0 means none: node 0 is the IPv4 root, never anyone's child
	answer int32    // index into answers, or -1
}

// NewNetworkTable builds a table from rules. Invalid prefixes and empty tags are ignored; host bits
// are cleared; IPv4-mapped IPv6 prefixes (::ffff:a.b.c.d/n, n >= 96) become IPv4 prefixes, the way
// lookups treat mapped addresses.
func NewNetworkTable(rules []NetworkRule) *NetworkTable {
	t := &NetworkTable{
		nodes: []trieNode{{answer: -1}, {answer: -1}},
		root4: 0,
		root6: 1,
	}
	// Tags per terminal node, in rule order, before ancestors are merged in.
	own := map[int32][]string{}
	for _, r := range rules {
		p, ok := NormalizePrefix(r.Prefix)
		if !ok || r.Tag == "" {
			continue
		}
		n := t.insert(p)
		if !slices.Contains(own[n], r.Tag) {
			own[n] = append(own[n], r.Tag)
		}
		t.rules++
	}
	t.finish(t.root4, nil, own)
	t.finish(t.root6, nil, own)
	return t
}

// NormalizePrefix gives one spelling per network: masked, without a zone, and IPv4-mapped
// prefixes as IPv4. ok is false for an invalid prefix.
func NormalizePrefix(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	a := p.Addr().WithZone("")
	bits := p.Bits()
	if a.Is4In6() {
		if bits < 96 {
			// Wider than the mapped block: it covers IPv6 space too, so keep it as IPv6.
			return netip.PrefixFrom(a, bits).Masked(), true
		}
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked(), true
}

// insert returns the node for p, creating the path to it.
func (t *NetworkTable) insert(p netip.Prefix) int32 {
	n := t.root6
	if p.Addr().Is4() {
		n = t.root4
	}
	b := p.Addr().As16()
	off := 0
	if p.Addr().Is4() {
		off = 96
	}
	for i := range p.Bits() {
		bit := bitAt(&b, off+i)
		c := t.nodes[n].child[bit]
		if c == 0 {
			c = int32(len(t.nodes))
			t.nodes = append(t.nodes, trieNode{answer: -1})
			t.nodes[n].child[bit] = c
		}
		n = c
	}
	return n
}

// finish computes, depth first, the answer of every node that ends a rule.
func (t *NetworkTable) finish(n int32, inherited []string, own map[int32][]string) {
	if tags := own[n]; len(tags) > 0 {
		ans := make([]string, 0, len(tags)+len(inherited))
		ans = append(ans, tags...)
		for _, x := range inherited {
			if !slices.Contains(ans, x) {
				ans = append(ans, x)
			}
		}
		// Full slice expression: a caller appending to the answer gets a copy instead of
		// overwriting a table shared by every request.
		ans = ans[:len(ans):len(ans)]
		t.nodes[n].answer = int32(len(t.answers))
		t.answers = append(t.answers, ans)
		inherited = ans
	}
	for _, c := range t.nodes[n].child {
		if c != 0 {
			t.finish(c, inherited, own)
		}
	}
}

func bitAt(b *[16]byte, i int) int { return int(b[i>>3]>>(7-uint(i&7))) & 1 }

// Lookup returns the tags of every rule containing addr, most specific first and deduplicated, or
// nil. The slice is shared by all callers: read it, do not modify it. A nil table has no rules.
func (t *NetworkTable) Lookup(addr netip.Addr) []string {
	if t == nil || !addr.IsValid() {
		return nil
	}
	addr = addr.Unmap()
	n, off := t.root6, 0
	if addr.Is4() {
		n, off = t.root4, 96
	}
	b := addr.As16()
	best := t.nodes[n].answer
	for i := off; i < 128; i++ {
		n = t.nodes[n].child[bitAt(&b, i)]
		if n == 0 {
			break
		}
		if a := t.nodes[n].answer; a >= 0 {
			best = a
		}
	}
	if best < 0 {
		return nil
	}
	return t.answers[best]
}

// Len reports how many rules the table holds.
func (t *NetworkTable) Len() int {
	if t == nil {
		return 0
	}
	return t.rules
}
