package geo_test

import (
	"net/netip"

	"github.com/google/go-cmp/cmp"
)

// addrs makes netip values comparable by cmp, which refuses unexported fields.
func addrs() cmp.Option {
	return cmp.Options{
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	}
}

// addr parses s, "" being the zero Addr.
func addr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}
