package geo_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/happy-turtle/oci-proxy/geo"
)

// FuzzResolve checks that no header can make Resolve panic or invent an address: the answer is
// the connection's address or one written in a header. Header lines are separated by '\n'.
func FuzzResolve(f *testing.F) {
	for _, tc := range resolveCases() {
		if len(tc.xff)+len(tc.forwarded) < 4096 {
			f.Add(tc.remote, tc.xff, tc.forwarded)
		}
	}
	c := geo.NewClientIP(trustedForTests(f), geo.HeaderAny)
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

func FuzzParseAWSRanges(f *testing.F) {
	seedFile(f, "../testdata/cloud/aws-ip-ranges.json")
	for in := range awsBadInputs() {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := geo.ParseAWSRanges(strings.NewReader(string(data)))
		checkRules(t, rules, err, "aws:")
	})
}

func FuzzParseGCPRanges(f *testing.F) {
	seedFile(f, "../testdata/cloud/gcp-cloud.json")
	for in := range gcpBadInputs() {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := geo.ParseGCPRanges(strings.NewReader(string(data)))
		checkRules(t, rules, err, "gcp:")
	})
}

func seedFile(f *testing.F, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
}

// checkRules holds a successful parse to what the network table expects: valid, masked prefixes,
// tags of the right cloud, no duplicates.
func checkRules(t *testing.T, rules []geo.NetworkRule, err error, tagPrefix string) {
	if err != nil {
		if rules != nil {
			t.Fatalf("rules %v with error %v", rules, err)
		}
		return
	}
	seen := map[geo.NetworkRule]bool{}
	for _, r := range rules {
		if !r.Prefix.IsValid() || r.Prefix != r.Prefix.Masked() {
			t.Fatalf("prefix %v is not valid and masked", r.Prefix)
		}
		if !strings.HasPrefix(r.Tag, tagPrefix) || len(r.Tag) == len(tagPrefix) {
			t.Fatalf("tag %q", r.Tag)
		}
		if seen[r] {
			t.Fatalf("duplicate rule %v", r)
		}
		seen[r] = true
	}
}
