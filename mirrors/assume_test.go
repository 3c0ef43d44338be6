package mirrors

import (
	"testing"

	"github.com/happy-turtle/oci-proxy/oci"
)

// TestAssumePresent checks that a mirror declared complete is chosen without presence checks.
func TestAssumePresent(t *testing.T) {
	cdn := newFake("cdn") // holds nothing: a check would say absent
	s := NewSelector([]*Mirror{
		mustMirror(t, Spec{Name: "cdn", Country: "DE", Location: atFrankfurt, AssumePresent: true}, cdn),
	}, Options{})
	d := s.Choose(t.Context(), Query{Loc: loc("89.160.20.112", "DE", 50.1, 8.7), Digest: digest(t, 7)})
	if d.Mirror != "cdn" || d.Reason != ReasonCountry || d.URL == nil {
		t.Fatalf("decision = %+v, want cdn (country)", d)
	}
	if n := cdn.stats.Load(); n != 0 {
		t.Errorf("%d presence checks on an assume_present mirror", n)
	}
	e := s.Explain(t.Context(), Query{Loc: loc("89.160.20.112", "DE", 50.1, 8.7), Digest: digest(t, 7)})
	if e.Mirrors[0].Presence != "assumed" {
		t.Errorf("explained presence = %q, want assumed", e.Mirrors[0].Presence)
	}
}

// TestExplainWithoutDigest ranks without checking presence and names the would-be choice.
func TestExplainWithoutDigest(t *testing.T) {
	eu, us := newFake("eu-west"), newFake("us-east")
	s := NewSelector([]*Mirror{
		mustMirror(t, Spec{Name: "eu-west", Country: "DE", Location: atFrankfurt}, eu),
		mustMirror(t, Spec{Name: "us-east", Country: "US", Location: atVirginia}, us),
	}, Options{})
	e := s.Explain(t.Context(), Query{Loc: loc("216.160.83.56", "US", 47.6, -122.3), Digest: oci.Digest{}})
	if e.Decision.Mirror != "us-east" || e.Decision.Reason != ReasonCountry {
		t.Errorf("decision = %+v, want us-east (country)", e.Decision)
	}
	if !e.Mirrors[1].Chosen || e.Mirrors[0].Position != 2 {
		t.Errorf("mirrors = %+v", e.Mirrors)
	}
	if eu.stats.Load()+us.stats.Load() != 0 {
		t.Errorf("presence checked without a digest")
	}
}
