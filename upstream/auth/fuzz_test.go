package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParseChallenge: no panic; a refusal wraps ErrChallenge; an accepted header stays within
// the bounds, has lowercase token schemes and non-empty lowercase token names, and round-trips:
// its challenges rendered with String parse back equal, and a Bearer challenge's realm,
// service and scope survive ChallengeHeader.
func FuzzParseChallenge(f *testing.F) {
	for _, tc := range goodChallenges {
		f.Add(tc.header)
	}
	for _, tc := range badChallenges {
		f.Add(tc.header)
	}
	f.Fuzz(func(t *testing.T, header string) {
		chs, err := ParseChallenge(header)
		if err != nil {
			if !errors.Is(err, ErrChallenge) {
				t.Fatalf("error %v does not wrap ErrChallenge", err)
			}
			return
		}
		if len(chs) == 0 || len(chs) > maxChallenges {
			t.Fatalf("%d challenges", len(chs))
		}
		rendered := make([]string, len(chs))
		for i, c := range chs {
			checkToken(t, "scheme", c.Scheme)
			if len(c.Params) > maxParams {
				t.Fatalf("%d parameters", len(c.Params))
			}
			for k := range c.Params {
				checkToken(t, "parameter name", k)
			}
			rendered[i] = c.String()
		}
		if again := strings.Join(rendered, ", "); len(again) <= maxChallengeBytes {
			back, err := ParseChallenge(again)
			if err != nil {
				t.Fatalf("rendered %q does not parse: %v", again, err)
			}
			if d := cmp.Diff(chs, back); d != "" {
				t.Fatalf("rendered %q parses differently (-first +again):\n%s", again, d)
			}
		}
		if c, ok := bearerChallenge(chs); ok {
			h := ChallengeHeader(c.Realm(), c.Service(), c.Scope())
			if len(h) > maxChallengeBytes {
				return
			}
			back, err := ParseChallenge(h)
			if err != nil {
				t.Fatalf("ChallengeHeader gave %q, which does not parse: %v", h, err)
			}
			b := back[0]
			if len(back) != 1 || b.Scheme != "bearer" || b.Realm() != c.Realm() || b.Service() != c.Service() || b.Scope() != c.Scope() {
				t.Fatalf("ChallengeHeader(%q, %q, %q) = %q parses as %v", c.Realm(), c.Service(), c.Scope(), h, back)
			}
		}
	})
}

func checkToken(t *testing.T, what, s string) {
	t.Helper()
	if s == "" {
		t.Fatalf("empty %s", what)
	}
	if s != strings.ToLower(s) {
		t.Fatalf("%s %q not lowercased", what, s)
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			t.Fatalf("%s %q has a byte %q outside the token grammar", what, s, s[i])
		}
	}
}
