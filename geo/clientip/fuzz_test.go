package clientip_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/happy-turtle/oci-proxy/geo/clientip"
)

// FuzzResolve checks that no header can make Resolve panic or invent an address: the answer is
// the connection's address or one written in a header. Header lines are separated by '\n'.
func FuzzResolve(f *testing.F) {
	for _, tc := range resolveCases() {
		if len(tc.xff)+len(tc.forwarded) < 4096 {
			f.Add(tc.remote, tc.xff, tc.forwarded)
		}
	}
	c := clientip.New(trustedForTests(f), clientip.Any)
	f.Fuzz(func(t *testing.T, remote, xff, forwarded string) {
		r, _ := netip.ParseAddr(remote)
		got := c.Resolve(r, lines(xff), lines(forwarded))
		if got == r.Unmap().WithZone("") {
			return
		}
		if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("Resolve = %v: not a normalized address", got)
		}
		if !mentions(xff, got) && !mentions(forwarded, got) {
			t.Fatalf("Resolve(%q, %q, %q) = %v, which no header mentions", remote, xff, forwarded, got)
		}
	})
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
