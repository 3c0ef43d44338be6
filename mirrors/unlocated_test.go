package mirrors

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/geo"
)

// TestUnlocated checks both answers for a client that cannot be located, and that a located
// client is served the same under either.
func TestUnlocated(t *testing.T) {
	k := keyOf(t, 1)
	unknown := loc("81.2.69.142", "")
	tests := []struct {
		name      string
		unlocated Unlocated
		loc       geo.Location
		want      choice
		wantNote  string // every mirror's note in an explanation, when not ranked
	}{
		{"mirrors, unlocated client", UnlocatedMirrors, unknown, choice{"plain", ReasonNoGeo}, ""},
		{"upstream, unlocated client", UnlocatedUpstream, unknown, choice{"", ReasonNoGeo}, "client not located (unlocated: upstream)"},
		{"upstream, located client", UnlocatedUpstream, loc("81.2.69.142", "DE", 50.1, 8.7), choice{"scoped", "country"}, ""},
		{"upstream, client in a mirror's network", UnlocatedUpstream, withTags(unknown, "net:plain"), choice{"plain", "network"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFake("plain", k)
			s := NewSelector([]*Mirror{
				mustMirror(t, Spec{Name: "scoped", Country: "DE", Location: atFrankfurt, OnlyContinents: []string{"EU"}}, newFake("scoped", k)),
				mustMirror(t, Spec{Name: "plain"}, b),
				mustMirror(t, Spec{Name: "off", Disabled: true}, newFake("off", k)),
			}, Options{Unlocated: tt.unlocated})
			q := Query{Loc: tt.loc, Digest: digest(t, 1)}
			d := s.Choose(t.Context(), q)
			if diff := cmp.Diff(tt.want, choice{d.Mirror, d.Reason}); diff != "" {
				t.Errorf("choice (-want +got):\n%s", diff)
			}
			e := s.Explain(t.Context(), q)
			if e.Decision.Reason != tt.want.Reason {
				t.Errorf("explained decision %+v", e.Decision)
			}
			if tt.wantNote != "" {
				for _, m := range e.Mirrors[:2] {
					if m.Excluded != tt.wantNote || m.Position != 0 {
						t.Errorf("explained %s: %+v, want note %q", m.Name, m, tt.wantNote)
					}
				}
				if got := e.Mirrors[2].Excluded; got != "disabled" {
					t.Errorf("explained the disabled mirror: %q", got)
				}
				if b.stats.Load() != 0 {
					t.Errorf("%d presence checks for a client sent to the upstream", b.stats.Load())
				}
			}
			var text bytes.Buffer
			if err := e.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			wantLine := "location  unknown (unlocated: " + tt.unlocated.String() + ")\n"
			if located := tt.loc.Known(); strings.Contains(text.String(), wantLine) == located {
				t.Errorf("explanation text (client located: %v):\n%s", located, text.String())
			}
		})
	}
}
