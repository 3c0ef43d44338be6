package mirrors

import (
	"fmt"
	"testing"
)

// benchMirrors spreads n mirrors over a few countries and places, all holding blob 1.
func benchMirrors(b testing.TB, n int) []*Mirror {
	countries := []struct {
		code     string
		lat, lon float64
	}{{"US", 38.9, -77.4}, {"US", 45.6, -121.2}, {"DE", 50.1, 8.7}, {"SE", 59.3, 18.1}, {"SG", 1.35, 103.8}, {"BR", -23.5, -46.6}, {"JP", 35.7, 139.7}}
	k := keyOf(b, 1)
	ms := make([]*Mirror, n)
	for i := range ms {
		c := countries[i%len(countries)]
		name := fmt.Sprintf("m%03d", i)
		cfg := Spec{Name: name, Country: c.code, Location: at(c.lat+float64(i%5)/10, c.lon)}
		if i%4 == 0 {
			cfg.ExcludeCountries = []string{"RU"}
		}
		if i%7 == 3 {
			cfg.CloudRegions = []string{"aws:ap-southeast-1"}
		}
		ms[i] = mustMirror(b, cfg, newFake(name, k))
	}
	return ms
}

func BenchmarkRank(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("mirrors=%d", n), func(b *testing.B) {
			s := NewSelector(benchMirrors(b, n), Options{})
			q := Query{Loc: loc("81.2.69.142", "FR", 48.9, 2.35), Digest: digest(b, 1)}
			buf := make([]cand, 0, n)
			ah := addrHash(q.Loc.Addr)
			b.ReportAllocs()
			for b.Loop() {
				cands, _ := s.rank(&q, buf[:0], nil, s.now().UnixNano())
				if len(cands) != n {
					b.Fatalf("%d candidates", len(cands))
				}
				s.order(cands, ah, nil)
			}
		})
	}
}

func BenchmarkChooseWarm(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("mirrors=%d", n), func(b *testing.B) {
			s := NewSelector(benchMirrors(b, n), Options{})
			q := Query{Loc: loc("81.2.69.142", "FR", 48.9, 2.35), Digest: digest(b, 1), Method: "GET"}
			if d := s.Choose(b.Context(), q); d.Mirror == "" {
				b.Fatalf("warm-up went upstream: %s", d.Reason)
			}
			b.ReportAllocs()
			for b.Loop() {
				if d := s.Choose(b.Context(), q); d.Mirror == "" {
					b.Fatal("went upstream")
				}
			}
		})
	}
}

// BenchmarkChooseFallThrough has the best mirror lack the blob (cached), so the full order is
// needed.
func BenchmarkChooseFallThrough(b *testing.B) {
	ms := benchMirrors(b, 10)
	s := NewSelector(ms, Options{})
	q := Query{Loc: loc("81.2.69.142", "FR", 48.9, 2.35), Digest: digest(b, 1), Method: "GET"}
	first := s.Choose(b.Context(), q).Mirror
	for _, m := range ms {
		if m.name == first {
			m.backend.(*fakeBackend).set(func(f *fakeBackend) { clear(f.present) })
		}
	}
	s = NewSelector(ms, Options{})
	if d := s.Choose(b.Context(), q); d.Mirror == first || d.Mirror == "" {
		b.Fatalf("warm-up chose %q", name(d))
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Choose(b.Context(), q)
	}
}

func BenchmarkChooseWarmParallel(b *testing.B) {
	s := NewSelector(benchMirrors(b, 10), Options{})
	q := Query{Loc: loc("81.2.69.142", "FR", 48.9, 2.35), Digest: digest(b, 1), Method: "GET"}
	s.Choose(b.Context(), q)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Choose(b.Context(), q)
		}
	})
}

// BenchmarkChooseOverBudget is a flood of made-up digests once the mirrors' budgets are spent:
// what each request costs when no check is made.
func BenchmarkChooseOverBudget(b *testing.B) {
	clk := newClock() // stands still: the budgets never refill
	s := NewSelector(benchMirrors(b, 10), Options{Clock: clk.Now, MaxChecksPerSecond: 1})
	ds := make([]Query, 1024)
	for i := range ds {
		ds[i] = Query{Loc: loc("81.2.69.142", "FR", 48.9, 2.35), Digest: digest(b, 1000+i), Method: "GET"}
	}
	for _, q := range ds[:20] { // spend every mirror's one check
		s.Choose(b.Context(), q)
	}
	if d := s.Choose(b.Context(), ds[20]); d.Reason != ReasonBusy {
		b.Fatalf("reason %q, want %q", d.Reason, ReasonBusy)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Choose(b.Context(), ds[i%len(ds)])
		i++
	}
}

// BenchmarkChooseWarmSmall is a warm choice among three mirrors, as in the repository's
// config.yaml: from the decision cache, and ranked as it would be without it.
func BenchmarkChooseWarmSmall(b *testing.B) {
	s := NewSelector(benchMirrors(b, 3), Options{})
	q := Query{Loc: loc("81.2.69.142", "FR", 48.9, 2.35), Digest: digest(b, 1), Method: "GET"}
	for range 3 {
		if d := s.Choose(b.Context(), q); d.Mirror == "" {
			b.Fatalf("warm-up went upstream: %s", d.Reason)
		}
	}
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d := s.Choose(b.Context(), q); d.Mirror == "" {
				b.Fatal("went upstream")
			}
		}
	})
	b.Run("ranked", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if d := s.chooseUncached(b.Context(), q); d.Mirror == "" {
				b.Fatal("went upstream")
			}
		}
	})
}
