package mirrors

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/geo"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update refreshes it):\n%s", path, diff)
	}
}

func TestExplain(t *testing.T) {
	clk := newClock()
	k := keyOf(t, 1)
	fake := func(name string, keys ...string) *fakeBackend {
		f := newFake(name, keys...)
		f.clock, f.sign = clk.Now, true
		return f
	}
	broken := fake("us-east", k)
	flaky := fake("flaky", k)
	flaky.err = errFake
	ms := []*Mirror{
		mustMirror(t, Spec{Name: "eu-west", Provider: "gcs", Country: "DE", Location: atFrankfurt}, fake("eu-west", k)),
		mustMirror(t, Spec{Name: "eu-north", Provider: "s3", Country: "SE", Location: atStockholm}, fake("eu-north")),
		mustMirror(t, Spec{Name: "us-east", Provider: "s3", Country: "US", Location: atVirginia}, broken),
		mustMirror(t, Spec{Name: "asia", Country: "SG", Location: atSingapore, OnlyCountries: []string{"SG", "MY"}}, fake("asia", k)),
		mustMirror(t, Spec{Name: "old", Disabled: true}, fake("old", k)),
		mustMirror(t, Spec{Name: "lab", Country: "SE", Weight: weight0}, fake("lab", k)),
		mustMirror(t, Spec{Name: "flaky", Country: "FI", Location: at(60.2, 24.9)}, flaky),
		mustMirror(t, Spec{Name: "v6", Family: IPv6Only}, fake("v6", k)),
	}
	s := NewSelector(ms, Options{Clock: clk.Now})
	for range 3 {
		s.Choose(t.Context(), Query{Loc: loc("81.2.69.142", "FI", 60.2, 24.9), Digest: digest(t, 2)})
	}
	broken.set(func(f *fakeBackend) { f.err = errFake }) // fails once, stays healthy
	// Warm one answer so that the cached marker shows.
	s.Choose(t.Context(), Query{Loc: loc("81.2.69.142", "DE", 50.1, 8.7), Digest: digest(t, 1)})

	q := Query{Loc: withTags(loc("81.2.69.142", "SE", 59.33, 18.07), "aws:eu-north-1"), Digest: digest(t, 1), Method: "GET"}
	q.Loc.ASN = 64500
	e := s.Explain(t.Context(), q)

	if d := s.Choose(t.Context(), q); d.Mirror != e.Decision.Mirror || d.Reason != e.Decision.Reason {
		t.Errorf("Explain decided %s (%s), Choose %s (%s)", e.Decision.Mirror, e.Decision.Reason, name(d), d.Reason)
	}

	var text bytes.Buffer
	if err := e.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	golden(t, "explain.txt", text.Bytes())
	js, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "explain.json", append(js, '\n'))
	for _, out := range []string{text.String(), string(js)} {
		if strings.Contains(out, "secret") || strings.Contains(out, "Signature") {
			t.Errorf("explanation shows a signature:\n%s", out)
		}
	}

	t.Run("upstream", func(t *testing.T) {
		s := NewSelector(ms[4:5], Options{Clock: clk.Now})
		var text bytes.Buffer
		if err := s.Explain(t.Context(), Query{Digest: digest(t, 1), Method: "HEAD"}).WriteText(&text); err != nil {
			t.Fatal(err)
		}
		golden(t, "explain-upstream.txt", text.Bytes())
	})
}

// ExplainRanking must not ask any mirror anything, whatever the selector has or has not learnt
// yet: a public page calls it on every visit. Explain, on the same selector, asks the mirrors
// whose credentials were never probed, which shows the fakes count what this test relies on.
func TestExplainRankingMakesNoCalls(t *testing.T) {
	k := keyOf(t, 1)
	de, us := newFake("eu-west", k), newFake("us-east", k)
	ms := []*Mirror{
		mustMirror(t, Spec{Name: "eu-west", Provider: "s3", Country: "DE", Location: atFrankfurt, CheckCredentials: true}, de),
		mustMirror(t, Spec{Name: "us-east", Provider: "s3", Country: "US", Location: atVirginia, CheckCredentials: true}, us),
	}
	s := NewSelector(ms, Options{})
	calls := func() int32 { return de.stats.Load() + de.urls.Load() + us.stats.Load() + us.urls.Load() }

	for _, tc := range []struct {
		name   string
		q      Query
		mirror string
		reason string
	}{
		{"country", Query{Loc: loc("89.160.20.112", "DE", 50.1, 8.7)}, "eu-west", ReasonCountry},
		{"continent", Query{Loc: loc("81.2.69.142", "GB", 51.5, -0.1)}, "eu-west", ReasonContinent},
		{"a digest is ignored", Query{Loc: loc("216.160.83.56", "US", 47.6, -122.3), Digest: digest(t, 1)}, "us-east", ReasonCountry},
		{"unlocated", Query{Loc: geo.Location{Addr: netip.MustParseAddr("192.0.2.1")}}, "", ReasonNoGeo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := s.ExplainRanking(tc.q)
			if n := calls(); n != 0 {
				t.Fatalf("ExplainRanking made %d backend calls", n)
			}
			if e.Digest != "" {
				t.Errorf("Digest = %q, want none", e.Digest)
			}
			if tc.mirror != "" && e.Decision.Mirror != tc.mirror || e.Decision.Reason != tc.reason {
				t.Errorf("decision %s (%s), want %s (%s)", e.Decision.Mirror, e.Decision.Reason, tc.mirror, tc.reason)
			}
		})
	}
	// The same ranking as Explain without a blob, which probes first.
	q := Query{Loc: loc("89.160.20.112", "DE", 50.1, 8.7)}
	full := s.Explain(t.Context(), q)
	if calls() == 0 {
		t.Fatal("Explain asked no mirror about its credentials: the fakes count nothing")
	}
	if diff := cmp.Diff(full, s.ExplainRanking(q)); diff != "" {
		t.Errorf("ExplainRanking differs from Explain (-Explain +ExplainRanking):\n%s", diff)
	}
}
