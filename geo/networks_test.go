package geo_test

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/geo"
)

func rule(prefix, tag string) geo.NetworkRule {
	return geo.NetworkRule{Prefix: netip.MustParsePrefix(prefix), Tag: tag}
}

func TestNetworkTableLookup(t *testing.T) {
	table := geo.NewNetworkTable([]geo.NetworkRule{
		rule("10.0.0.0/8", "a"),
		rule("10.1.0.0/16", "b"),
		rule("10.1.2.0/24", "c"),
		rule("10.1.2.0/24", "a"),     // same tag as an enclosing rule
		rule("10.1.2.0/24", "c"),     // exact duplicate
		rule("10.1.3.99/24", "host"), // host bits set: means 10.1.3.0/24
		rule("10.1.2.3/32", "one"),
		rule("0.0.0.0/0", "any4"),
		rule("2001:db8::/32", "doc6"),
		rule("2001:db8:de::/48", "de"),
		rule("2001:db8:de::1/128", "one6"),
		rule("::ffff:192.0.2.0/120", "mapped"), // an IPv4 rule written as IPv6
		rule("::/0", "any6"),
		{Tag: "invalid prefix"},
		{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, // no tag
	})
	tests := []struct {
		ip   string
		want []string
	}{
		{"10.1.2.3", []string{"one", "c", "a", "b", "any4"}},
		{"10.1.2.4", []string{"c", "a", "b", "any4"}},
		{"10.1.3.1", []string{"host", "b", "a", "any4"}},
		{"10.9.9.9", []string{"a", "any4"}},
		{"11.0.0.1", []string{"any4"}},
		{"::ffff:10.1.2.4", []string{"c", "a", "b", "any4"}},
		{"192.0.2.200", []string{"mapped", "any4"}},
		{"2001:db8:de::1", []string{"one6", "de", "doc6", "any6"}},
		{"2001:db8:de::2", []string{"de", "doc6", "any6"}},
		{"2001:db8:df::1", []string{"doc6", "any6"}},
		{"2001:db9::1", []string{"any6"}},
		{"fe80::1%eth0", []string{"any6"}},
		{"", nil},
	}
	for _, tc := range tests {
		t.Run(tc.ip, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, table.Lookup(addr(tc.ip))); diff != "" {
				t.Errorf("Lookup(%s) mismatch (-want +got):\n%s", tc.ip, diff)
			}
		})
	}
	if got, want := table.Len(), 13; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
}

func TestNetworkTableNoMatch(t *testing.T) {
	table := geo.NewNetworkTable([]geo.NetworkRule{rule("10.0.0.0/8", "a"), rule("2001:db8::/32", "b")})
	for _, ip := range []string{"11.0.0.0", "9.255.255.255", "2001:db9::", "::", "::ffff:11.0.0.1"} {
		if got := table.Lookup(addr(ip)); got != nil {
			t.Errorf("Lookup(%s) = %q, want nil", ip, got)
		}
	}
	var none *geo.NetworkTable
	if got := none.Lookup(addr("10.0.0.1")); got != nil {
		t.Errorf("nil table: Lookup = %q, want nil", got)
	}
	if got := geo.NewNetworkTable(nil).Lookup(addr("10.0.0.1")); got != nil {
		t.Errorf("empty table: Lookup = %q, want nil", got)
	}
}

// An answer is shared between requests; appending to it must not change what others see.
func TestNetworkTableAnswerNotClobbered(t *testing.T) {
	table := geo.NewNetworkTable([]geo.NetworkRule{rule("10.0.0.0/8", "a"), rule("10.1.0.0/16", "b")})
	got := table.Lookup(addr("10.1.0.1"))
	_ = append(got, "x")
	_ = append(table.Lookup(addr("10.2.0.1")), "y")
	if diff := cmp.Diff([]string{"b", "a"}, table.Lookup(addr("10.1.0.1"))); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

// TestNetworkTableMatchesLinearScan compares the trie with the obvious implementation on random
// nested rules.
func TestNetworkTableMatchesLinearScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rules := randomRules(rng, 2000)
	table := geo.NewNetworkTable(rules)
	for range 5000 {
		a := randomAddrNear(rng, rules)
		if diff := cmp.Diff(linearLookup(rules, a), table.Lookup(a)); diff != "" {
			t.Fatalf("Lookup(%s) mismatch (-linear +trie):\n%s", a, diff)
		}
	}
}

func linearLookup(rules []geo.NetworkRule, a netip.Addr) []string {
	a = a.Unmap()
	var matching []geo.NetworkRule
	for _, r := range rules {
		if r.Prefix.Masked().Contains(a) {
			matching = append(matching, r)
		}
	}
	// Most specific first; among equals, rule order.
	slices.SortStableFunc(matching, func(x, y geo.NetworkRule) int { return y.Prefix.Bits() - x.Prefix.Bits() })
	var tags []string
	for _, r := range matching {
		if !slices.Contains(tags, r.Tag) {
			tags = append(tags, r.Tag)
		}
	}
	return tags
}

// randomRules makes rules that nest a lot: prefixes inside a few /8s and /32s, with few tags.
func randomRules(rng *rand.Rand, n int) []geo.NetworkRule {
	tags := []string{"aws:us-east-1", "aws:eu-central-1", "gcp:us-east1", "net:a", "net:b"}
	var rules []geo.NetworkRule
	for range n {
		var p netip.Prefix
		if rng.IntN(2) == 0 {
			b := [4]byte{byte(3 + rng.IntN(3)), byte(rng.IntN(4)), byte(rng.IntN(256)), byte(rng.IntN(256))}
			p = netip.PrefixFrom(netip.AddrFrom4(b), 8+rng.IntN(25)).Masked()
		} else {
			var b [16]byte
			b[0], b[1], b[2], b[3] = 0x26, 0x00, 0x1f, byte(rng.IntN(4))
			b[4], b[5] = byte(rng.IntN(256)), byte(rng.IntN(256))
			p = netip.PrefixFrom(netip.AddrFrom16(b), 28+rng.IntN(37)).Masked()
		}
		rules = append(rules, geo.NetworkRule{Prefix: p, Tag: tags[rng.IntN(len(tags))]})
	}
	return rules
}

// randomAddrNear returns an address inside or just outside a random rule.
func randomAddrNear(rng *rand.Rand, rules []geo.NetworkRule) netip.Addr {
	p := rules[rng.IntN(len(rules))].Prefix
	b := p.Addr().As16()
	off := 0
	if p.Addr().Is4() {
		off = 12
	}
	for i := off + p.Bits()/8; i < 16; i++ {
		b[i] ^= byte(rng.IntN(256))
	}
	if rng.IntN(4) == 0 {
		b[off+rng.IntN(16-off)] ^= byte(1 << rng.IntN(8)) // maybe outside
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
		if rng.IntN(2) == 0 {
			a = netip.AddrFrom16(a.As16()) // the mapped form
		}
	}
	return a
}
