package clientip_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/happy-turtle/oci-proxy/geo/clientip"
)

// FuzzResolve checks two invariants for any headers, header lines being separated by '\n':
//   - no header can make Resolve panic or invent an address: the answer is the connection's
//     address or one written in a header;
//   - whatever a client sent, an element a trusted proxy appends for an untrusted peer, on the
//     same line or on a line of its own, makes that peer the answer.
func FuzzResolve(f *testing.F) {
	for _, tc := range resolveCases() {
		if len(tc.xff)+len(tc.forwarded) < 4096 {
			f.Add(tc.remote, tc.xff, tc.forwarded)
		}
	}
	trusted := trustedForTests(f)
	c := clientip.New(trusted, clientip.Any)
	proxy := netip.MustParseAddr("10.0.0.1")
	f.Fuzz(func(t *testing.T, remote, xff, forwarded string) {
		r, _ := netip.ParseAddr(remote)
		if got := c.Resolve(r, lines(xff), lines(forwarded)); got != r.Unmap().WithZone("") {
			if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
				t.Fatalf("Resolve = %v: not a normalized address", got)
			}
			if !mentions(xff, got) && !mentions(forwarded, got) {
				t.Fatalf("Resolve(%q, %q, %q) = %v, which no header mentions", remote, xff, forwarded, got)
			}
		}

		// The peer the proxy saw: the fuzzed remote when it is untrusted.
		peer := r.Unmap().WithZone("")
		if !peer.IsValid() || slices.ContainsFunc(trusted, func(p netip.Prefix) bool { return p.Contains(peer) }) {
			peer = netip.MustParseAddr("81.2.69.142")
		}
		node := peer.String()
		if peer.Is6() {
			node = `"[` + node + `]"`
		}
		for _, fwd := range appended(lines(forwarded), "for="+node) {
			if got := c.Resolve(proxy, lines(xff), fwd); got != peer {
				t.Fatalf("Forwarded %q with the proxy's element: Resolve = %v, want %v", fwd, got, peer)
			}
		}
		for _, x := range appended(lines(xff), peer.String()) {
			if got := c.Resolve(proxy, x, nil); got != peer {
				t.Fatalf("X-Forwarded-For %q with the proxy's element: Resolve = %v, want %v", x, got, peer)
			}
		}
	})
}

// appended returns the header lines a proxy writes when it appends elem to ls: at the end of the
// last line, and as a line of its own.
func appended(ls []string, elem string) [][]string {
	own := append(slices.Clone(ls), elem)
	if len(ls) == 0 {
		return [][]string{own}
	}
	same := slices.Clone(ls)
	same[len(same)-1] += ", " + elem
	return [][]string{same, own}
}

// mentions reports whether some run of address characters in s, with an optional port, is a
// spelling of a. It is deliberately cruder than the parser under test.
func mentions(s string, a netip.Addr) bool {
	isAddrChar := func(r rune) bool {
		return r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || strings.ContainsRune(":.%_-", r)
	}
	for _, run := range strings.FieldsFunc(s, func(r rune) bool { return !isAddrChar(r) }) {
		for _, cand := range []string{run, run[:max(0, strings.LastIndexByte(run, ':'))]} {
			if b, err := netip.ParseAddr(cand); err == nil && b.Unmap().WithZone("") == a {
				return true
			}
		}
	}
	return false
}
