package mirrors

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/happy-turtle/oci-proxy/geo"
)

// chooseUncached is Choose without the decision cache: the reference it must agree with.
func (s *Selector) chooseUncached(ctx context.Context, q Query) Decision {
	return s.choose(ctx, &q, s.now().UnixNano(), nil)
}

// TestDecisionCacheAgreesWithSelector runs random requests, clock moves, deletions and failures
// against one Selector and checks that every answer Choose gives (from the decision cache or
// not) is the one the ranking gives at that moment.
func TestDecisionCacheAgreesWithSelector(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { decisionCacheRun(t, seed) })
	}
}

func decisionCacheRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 42))
	clk := newClock()
	const blobs = 4
	var keys []string
	for n := 1; n <= blobs; n++ {
		keys = append(keys, keyOf(t, n))
	}
	fakes := []*fakeBackend{
		newFake("de-a", keys...), newFake("de-b", keys...), newFake("us", keys...), newFake("sg", keys[:2]...),
	}
	for _, f := range fakes {
		f.clock = clk.Now
		f.sign = true
	}
	fakes[1].sign = false // a public mirror: its URLs do not expire
	// de-a and de-b are one place: German clients are shared between them by address.
	ms := []*Mirror{
		mustMirror(t, Spec{Name: "de-a", Country: "DE", Location: atFrankfurt, SigningTTL: 10 * time.Minute}, fakes[0]),
		mustMirror(t, Spec{Name: "de-b", Country: "DE", Location: atFrankfurt, Weight: 50}, fakes[1]),
		mustMirror(t, Spec{Name: "us", Country: "US", Location: atVirginia, ExcludeCountries: []string{"CN"}}, fakes[2]),
		mustMirror(t, Spec{Name: "sg", Country: "SG", Location: atSingapore, Family: IPv4Only}, fakes[3]),
	}
	s := NewSelector(ms, Options{Clock: clk.Now, HitTTL: 20 * time.Minute, MissTTL: 30 * time.Second,
		MaxChecksPerSecond: -1, HealthAfter: 1, Backoff: 10 * time.Second, Timeout: time.Second})
	clients := []geo.Location{
		loc("81.2.69.142", "DE", 52.5, 13.4), loc("81.2.69.143", "DE", 52.5, 13.4), loc("81.2.69.144", "DE", 52.5, 13.4),
		loc("81.2.69.150", "DE"), loc("2001:db8::1", "DE", 52.5, 13.4),
		loc("8.8.8.8", "US", 40.7, -74), loc("8.8.4.4", "US", 40.7, -74),
		loc("1.2.3.4", "JP", 35.7, 139.7), loc("2001:db8::2", "JP", 35.7, 139.7),
		loc("1.2.4.5", "CN", 39.9, 116.4), loc("9.9.9.9", ""), loc("", ""),
		withTags(loc("3.80.0.1", "DE", 50, 8), "aws:us-east-1"),
	}
	clients[7].ASN = 2516
	ctx := t.Context()
	opts := cmp.Options{cmpopts.EquateEmpty(), cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
		cmpopts.IgnoreFields(Decision{}, "Values")}
	hits := 0
	for step := range 3000 {
		switch r := rng.IntN(100); {
		case r < 90:
			q := Query{Loc: clients[rng.IntN(len(clients))], Digest: digest(t, 1+rng.IntN(blobs)), Method: []string{"GET", "HEAD"}[rng.IntN(2)]}
			// The ranking's answer before and after: when a check made on the way changed
			// what the Selector knows (a failure, a new presence), the two differ and Choose
			// may give either.
			want := s.chooseUncached(ctx, q)
			dk, ok := s.decisionKeyOf(&q)
			_, hit := s.cachedChoice(dk, q.Loc.Addr, s.gen.Load(), clk.Now().UnixNano())
			got := s.Choose(ctx, q)
			if after := s.chooseUncached(ctx, q); !cmp.Equal(want, after, opts) {
				continue
			}
			if diff := cmp.Diff(want, got, opts); diff != "" {
				t.Fatalf("step %d, %+v (from the decision cache: %v): choice differs (-selector +cached):\n%s", step, q, ok && hit, diff)
			}
			if ok && hit {
				hits++
			}
			if v := got.Values; v != nil && *v != [3]string{got.Mirror, got.Reason, got.Location} {
				t.Fatalf("step %d: values %q for %+v", step, *v, got)
			}
		case r < 95:
			clk.Add(time.Duration(rng.IntN(int(6 * time.Minute))))
		case r < 97: // a blob deleted from a bucket, or copied back
			f, k := fakes[rng.IntN(len(fakes))], keys[rng.IntN(blobs)]
			f.set(func(f *fakeBackend) {
				if _, ok := f.present[k]; ok {
					delete(f.present, k)
				} else {
					f.present[k] = 99
				}
			})
		case r < 98: // a mirror starts failing
			fakes[rng.IntN(len(fakes))].set(func(f *fakeBackend) { f.err = errFake })
		default: // the failures end; health probes, as Run makes them
			for i := range ms {
				fakes[i].set(func(f *fakeBackend) { f.err = nil })
				if s.state[i].downUntil.Load() != 0 {
					s.probe(i, digest(t, 1))
				}
			}
		}
	}
	if hits < 100 {
		t.Fatalf("only %d choices could have come from the decision cache", hits)
	}
}

func TestDecisionCacheHitAllocatesNothing(t *testing.T) {
	s := NewSelector(world(t), Options{})
	q := Query{Loc: loc("81.2.69.142", "DE", 52.5, 13.4), Digest: digest(t, 1), Method: "GET"}
	for range 3 {
		s.Choose(t.Context(), q) // presence, URL, then the decision
	}
	if s.decisions.len() == 0 {
		t.Fatal("nothing cached")
	}
	if n := testing.AllocsPerRun(100, func() { s.Choose(t.Context(), q) }); n != 0 {
		t.Fatalf("%v allocations per cached choice", n)
	}
}

// TestDecisionCacheNotWhileUnhealthy checks that a mirror set aside turns the cache off, and that
// it comes back in the choice as soon as it is healthy again.
func TestDecisionCacheNotWhileUnhealthy(t *testing.T) {
	k := keyOf(t, 1)
	clk := newClock()
	nb, fb := newFake("near", k), newFake("far", k)
	s := NewSelector([]*Mirror{
		mustMirror(t, Spec{Name: "near", Country: "DE", Location: atFrankfurt}, nb),
		mustMirror(t, Spec{Name: "far", Country: "US", Location: atVirginia}, fb),
	}, Options{Clock: clk.Now, HealthAfter: 1, HitTTL: time.Minute})
	q := Query{Loc: loc("81.2.69.142", "DE", 52.5, 13.4), Digest: digest(t, 1), Method: "GET"}
	if d := s.Choose(t.Context(), q); d.Mirror != "near" {
		t.Fatalf("first choice %q", d.Mirror)
	}
	s.Choose(t.Context(), q) // cached now
	s.failed(0, errFake)
	if d := s.Choose(t.Context(), q); d.Mirror != "far" {
		t.Fatalf("with near set aside: %q", d.Mirror)
	}
	s.succeeded(0)
	if d := s.Choose(t.Context(), q); d.Mirror != "near" {
		t.Fatalf("near healthy again: %q", d.Mirror)
	}
	// The presence entry expires: the blob is asked about again, and is gone.
	nb.set(func(f *fakeBackend) { delete(f.present, k) })
	clk.Add(time.Minute)
	if d := s.Choose(t.Context(), q); d.Mirror != "far" || d.Missed != "near" {
		t.Fatalf("after expiry and deletion: %+v", d)
	}
}
