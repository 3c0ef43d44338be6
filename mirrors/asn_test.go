package mirrors

import (
	"testing"
)

// TestASNTier checks that a client in one of a mirror's AS numbers gets it as a network match,
// ahead of a mirror in its own country.
func TestASNTier(t *testing.T) {
	k := keyOf(t, 1)
	s := NewSelector([]*Mirror{
		mustMirror(t, Spec{Name: "de", Country: "DE", Location: atFrankfurt}, newFake("de", k)),
		mustMirror(t, Spec{Name: "isp-cache", Country: "US", Location: atVirginia, ASNs: []uint32{3320}}, newFake("isp-cache", k)),
	}, Options{})
	for _, tc := range []struct {
		asn                 uint32
		wantMirror, wantWhy string
	}{
		{3320, "isp-cache", ReasonNetwork},
		{64500, "de", ReasonCountry},
		{0, "de", ReasonCountry},
	} {
		l := loc("89.160.20.112", "DE", 50.1, 8.7)
		l.ASN = tc.asn
		d := s.Choose(t.Context(), Query{Loc: l, Digest: digest(t, 1)})
		if d.Mirror != tc.wantMirror || d.Reason != tc.wantWhy {
			t.Errorf("AS%d: %s (%s), want %s (%s)", tc.asn, d.Mirror, d.Reason, tc.wantMirror, tc.wantWhy)
		}
	}
}
