package mirrors

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestBudgetFlood asks for made-up digests, many a second for a few seconds of a fake clock: the
// mirror sees at most its budget of checks a second, every other request is skipped at once
// (fallback:busy), and a blob known to be there keeps its mirror throughout.
func TestBudgetFlood(t *testing.T) {
	tests := []struct {
		name             string
		budget           int // Options.MaxChecksPerSecond
		perSecond, secs  int
		wantMin, wantMax int32 // checks the flood makes at the mirror
	}{
		// The warm-up of the known blob takes one check of the first second.
		{"a few a second", 3, 50, 5, 14, 15},
		{"tens a second", 40, 200, 4, 159, 160},
		{"more budget than requests", 500, 100, 3, 300, 300},
		{"no budget", -1, 300, 2, 600, 600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			known := keyOf(t, 1)
			b := newFake("m", known)
			s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "m"}, b)}, Options{Clock: clk.Now, MaxChecksPerSecond: tt.budget})
			q := func(n int) Query { return Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, n)} }
			if d := s.Choose(t.Context(), q(1)); d.Mirror != "m" {
				t.Fatalf("warm-up chose %q (%s)", name(d), d.Reason)
			}
			before := b.stats.Load()
			reasons := map[string]int{}
			for sec := range tt.secs {
				for j := range tt.perSecond {
					reasons[s.Choose(t.Context(), q(1000+sec*tt.perSecond+j)).Reason]++
				}
				if d := s.Choose(t.Context(), q(1)); d.Mirror != "m" {
					t.Fatalf("second %d: the known blob went to %q (%s)", sec, name(d), d.Reason)
				}
				clk.Add(time.Second)
			}
			checks := b.stats.Load() - before
			if checks < tt.wantMin || checks > tt.wantMax {
				t.Errorf("%d checks at the mirror, want %d to %d", checks, tt.wantMin, tt.wantMax)
			}
			want := map[string]int{ReasonNotPresent: int(checks)}
			if busy := tt.secs*tt.perSecond - int(checks); busy > 0 {
				want[ReasonBusy] = busy
			}
			if diff := cmp.Diff(want, reasons); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
			h := healthOf(s, "m")
			if !h.Healthy || h.Failures != 0 || h.SkippedBudget != uint64(tt.secs*tt.perSecond-int(checks)) {
				t.Errorf("health after the flood: %+v", h)
			}
		})
	}
}

// TestBudgetSkipsToNextCandidate checks that a mirror over budget costs the request nothing but
// the next candidate, that the refused check is not remembered as a miss, and that an
// explanation says why.
func TestBudgetSkipsToNextCandidate(t *testing.T) {
	clk := newClock()
	k1, k2 := keyOf(t, 1), keyOf(t, 2)
	nb, fb := newFake("near", k1, k2), newFake("far", k1, k2)
	s := NewSelector([]*Mirror{
		mustMirror(t, Spec{Name: "near", Country: "DE", Location: atFrankfurt}, nb),
		mustMirror(t, Spec{Name: "far", Country: "US", Location: atVirginia}, fb),
	}, Options{Clock: clk.Now, MaxChecksPerSecond: 1})
	q := func(n int) Query { return Query{Loc: loc("81.2.69.142", "DE", 52.5, 13.4), Digest: digest(t, n)} }
	choose := func(n int) choice { d := s.Choose(t.Context(), q(n)); return choice{d.Mirror, d.Reason} }

	if diff := cmp.Diff(choice{"near", "country"}, choose(1)); diff != "" {
		t.Fatalf("first blob (-want +got):\n%s", diff)
	}
	// near's one check a second is spent: blob 2 goes to far at once, and far's is spent too.
	if diff := cmp.Diff(choice{"far", "distance"}, choose(2)); diff != "" {
		t.Fatalf("second blob (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(choice{"", ReasonBusy}, choose(3)); diff != "" {
		t.Fatalf("third blob (-want +got):\n%s", diff)
	}
	e := s.Explain(t.Context(), q(4))
	for _, m := range e.Mirrors {
		if m.Presence != "busy" || m.Excluded != "presence check skipped: budget of 1 checks/s spent" {
			t.Errorf("explained %s: presence %q, note %q", m.Name, m.Presence, m.Excluded)
		}
	}
	if e.Decision.Reason != ReasonBusy {
		t.Errorf("explained decision %+v", e.Decision)
	}
	// Nothing was cached for blob 2 on near: with budget again, near is asked and serves it.
	clk.Add(time.Second)
	calls := nb.stats.Load()
	if diff := cmp.Diff(choice{"near", "country"}, choose(2)); diff != "" {
		t.Fatalf("blob 2 after a second (-want +got):\n%s", diff)
	}
	if got := nb.stats.Load() - calls; got != 1 {
		t.Errorf("%d checks at near for blob 2, want 1", got)
	}
}

// TestBudgetMergedChecks checks that requests joining a check in flight take nothing from the
// budget: one blob asked for by many clients at once is one check.
func TestBudgetMergedChecks(t *testing.T) {
	b := newFake("m", keyOf(t, 1))
	gate := make(chan struct{})
	b.gate = gate
	s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "m"}, b)}, Options{MaxChecksPerSecond: 1})
	q := Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, 1)}
	var wg sync.WaitGroup
	got := make([]string, 30)
	for i := range got {
		wg.Go(func() { got[i] = name(s.Choose(t.Context(), q)) })
	}
	waitFor(t, "first check", func() bool { return b.stats.Load() == 1 })
	time.Sleep(20 * time.Millisecond) // let the others join the flight
	close(gate)
	wg.Wait()
	for i, g := range got {
		if g != "m" {
			t.Errorf("request %d went to %s", i, g)
		}
	}
	if n := b.stats.Load(); n != 1 {
		t.Errorf("%d checks, want 1", n)
	}
}

// TestThrottled answers presence checks with "too many requests": the mirror is paced (no
// checks until the wait it asked for has passed on the fake clock), blobs known to be there keep
// it, and its health is untouched however often it throttles. A 503 that does not say when to
// come back is a failure like any other.
func TestThrottled(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantWait time.Duration // 0: not throttling
	}{
		{"429 without Retry-After", &ThrottledError{Status: 429}, MinPause},
		{"429 with Retry-After", fmt.Errorf("stat: %w", &ThrottledError{Status: 429, RetryAfter: 5 * time.Second}), 5 * time.Second},
		{"503 with Retry-After", &ThrottledError{Status: 503, RetryAfter: 20 * time.Second}, 20 * time.Second},
		{"Retry-After beyond the bound", &ThrottledError{Status: 429, RetryAfter: time.Hour}, MaxPause},
		{"503 without Retry-After", fmt.Errorf("stat: unexpected status 503 Service Unavailable"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			b := newFake("m", keyOf(t, 1), keyOf(t, 2))
			s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "m"}, b)}, Options{Clock: clk.Now})
			q := func(n int) Query { return Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, n)} }
			if d := s.Choose(t.Context(), q(1)); d.Mirror != "m" {
				t.Fatalf("warm-up chose %q", name(d))
			}
			b.set(func(f *fakeBackend) { f.err = tt.err })
			if tt.wantWait == 0 {
				for range 3 {
					if d := s.Choose(t.Context(), q(2)); d.Reason != ReasonError {
						t.Fatalf("reason %q, want %q", d.Reason, ReasonError)
					}
				}
				if h := healthOf(s, "m"); h.Healthy || h.Failures != 3 || !h.PacedUntil.IsZero() {
					t.Errorf("after 3 plain 503s: %+v, want set aside and not paced", h)
				}
				return
			}
			// Several rounds of throttling: each one pauses, none counts as a failure.
			for round := range 4 {
				start := clk.Now()
				calls := b.stats.Load()
				if d := s.Choose(t.Context(), q(2)); d.Reason != ReasonBusy {
					t.Fatalf("round %d: reason %q, want %q", round, d.Reason, ReasonBusy)
				}
				if got := b.stats.Load() - calls; got != 1 {
					t.Fatalf("round %d: %d checks, want the one that was throttled", round, got)
				}
				h := healthOf(s, "m")
				if !h.Healthy || h.Failures != 0 || !h.PacedUntil.Equal(start.Add(tt.wantWait)) {
					t.Fatalf("round %d: health %+v, want healthy and paced until %v", round, h, start.Add(tt.wantWait))
				}
				clk.Add(tt.wantWait - time.Millisecond)
				for n := 3; n < 10; n++ {
					if d := s.Choose(t.Context(), q(n)); d.Reason != ReasonBusy {
						t.Fatalf("round %d, while paced: reason %q, want %q", round, d.Reason, ReasonBusy)
					}
				}
				if d := s.Choose(t.Context(), q(1)); d.Mirror != "m" {
					t.Fatalf("round %d: the known blob went to %q (%s) while paced", round, name(d), d.Reason)
				}
				if got := b.stats.Load() - calls; got != 1 {
					t.Fatalf("round %d: %d checks while paced, want none", round, got-1)
				}
				clk.Add(time.Millisecond)
			}
			// The service answers again: the blob that was refused is asked about and served.
			b.set(func(f *fakeBackend) { f.err = nil })
			if d := s.Choose(t.Context(), q(2)); d.Mirror != "m" {
				t.Errorf("after the pause: %q (%s)", name(d), d.Reason)
			}
			if h := healthOf(s, "m"); h.SkippedPaced != 4*7 || h.Failures != 0 {
				t.Errorf("health %+v, want 28 checks skipped while paced and no failures", h)
			}
		})
	}
}

// TestThrottledProbe checks that the background probe of a mirror set aside respects its pause
// and that a throttled retry does not lengthen its back-off.
func TestThrottledProbe(t *testing.T) {
	clk := newClock()
	b := newFake("m", keyOf(t, 1))
	s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "m"}, b)}, Options{Clock: clk.Now})
	q := Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, 1)}
	b.err = errFake
	for range 3 {
		s.Choose(t.Context(), q)
	}
	if h := healthOf(s, "m"); h.Healthy {
		t.Fatalf("not set aside: %+v", h)
	}
	b.set(func(f *fakeBackend) { f.err = &ThrottledError{Status: 429, RetryAfter: 30 * time.Second} })
	clk.Add(10 * time.Second) // the back-off has passed: this request starts a retry
	s.Choose(t.Context(), q)
	waitFor(t, "throttled retry", func() bool { return !healthOf(s, "m").PacedUntil.IsZero() })
	waitFor(t, "probe done", func() bool { return !s.state[0].probing.Load() })
	h := healthOf(s, "m")
	if want := clk.Now().Add(30 * time.Second); !h.DownUntil.Equal(want) || !h.PacedUntil.Equal(want) {
		t.Errorf("down until %v, paced until %v; want both %v: the retry waits for the pause, and only for it", h.DownUntil, h.PacedUntil, want)
	}
	calls := b.stats.Load()
	clk.Add(20 * time.Second) // past the back-off, within the pause
	s.Choose(t.Context(), q)
	waitFor(t, "probe done", func() bool { return !s.state[0].probing.Load() })
	if got := b.stats.Load() - calls; got != 0 {
		t.Errorf("%d checks during the pause", got)
	}
	if h := healthOf(s, "m"); !h.DownUntil.Equal(h.PacedUntil) {
		t.Errorf("down until %v, want the end of the pause %v", h.DownUntil, h.PacedUntil)
	}
	b.set(func(f *fakeBackend) { f.err = nil })
	clk.Add(10 * time.Second)
	s.Choose(t.Context(), q)
	waitFor(t, "recovery", func() bool { return healthOf(s, "m").Healthy })
}
