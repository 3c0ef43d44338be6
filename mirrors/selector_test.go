package mirrors

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/geo"
)

// world is a mirror table spread over three continents; every mirror holds blob 1.
func world(t *testing.T) []*Mirror {
	t.Helper()
	k := keyOf(t, 1)
	return []*Mirror{
		mustMirror(t, Spec{Name: "us-east", Country: "US", Location: atVirginia, CloudRegions: []string{"aws:us-east-1"}}, newFake("us-east", k)),
		mustMirror(t, Spec{Name: "us-west", Country: "US", Location: atOregon}, newFake("us-west", k)),
		mustMirror(t, Spec{Name: "eu-west", Country: "DE", Location: atFrankfurt}, newFake("eu-west", k)),
		mustMirror(t, Spec{Name: "eu-north", Country: "SE", Location: atStockholm}, newFake("eu-north", k)),
		mustMirror(t, Spec{Name: "asia", Country: "SG", Location: atSingapore}, newFake("asia", k)),
		mustMirror(t, Spec{Name: "corp", Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, newFake("corp", k)),
	}
}

type choice struct{ Mirror, Reason string }

func TestChooseTiers(t *testing.T) {
	tests := []struct {
		name string
		loc  geo.Location
		want choice
	}{
		{"own network", withTags(loc("192.0.2.7", "DE", 50, 8), "net:corp"), choice{"corp", "network"}},
		{"cloud region beats country", withTags(loc("3.80.0.1", "DE", 50, 8), "aws:us-east-1"), choice{"us-east", "network"}},
		{"country", loc("81.2.69.142", "DE", 52.5, 13.4), choice{"eu-west", "country"}},
		{"country, then distance inside it", loc("81.2.69.142", "US", 47.6, -122.3), choice{"us-west", "country"}},
		{"continent, nearest", loc("81.2.69.142", "FR", 48.9, 2.35), choice{"eu-west", "continent"}},
		{"continent, nearest other way", loc("81.2.69.142", "FI", 60.2, 24.9), choice{"eu-north", "continent"}},
		{"distance", loc("81.2.69.142", "BR", -23.5, -46.6), choice{"us-east", "distance"}},
		{"distance across the date line", loc("81.2.69.142", "NZ", -36.8, 174.8), choice{"asia", "distance"}},
		{"country without coordinates", loc("81.2.69.142", "SE"), choice{"eu-north", "country"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSelector(world(t), Options{})
			d := s.Choose(t.Context(), Query{Loc: tt.loc, Digest: digest(t, 1), Method: "GET"})
			if diff := cmp.Diff(tt.want, choice{d.Mirror, d.Reason}); diff != "" {
				t.Errorf("choice (-want +got):\n%s", diff)
			}
		})
	}
}

func TestChooseScopes(t *testing.T) {
	k := keyOf(t, 1)
	tests := []struct {
		name   string
		mirror Spec
		loc    geo.Location
		want   choice
	}{
		{"only_countries in", Spec{OnlyCountries: []string{"DE", "AT"}}, loc("81.2.69.142", "AT"), choice{"scoped", "continent"}},
		{"only_countries out", Spec{OnlyCountries: []string{"DE", "AT"}}, loc("81.2.69.142", "CH"), choice{"other", "weight"}},
		{"only_countries, unknown country", Spec{OnlyCountries: []string{"DE"}}, loc("81.2.69.142", ""), choice{"other", "fallback:no-geo"}},
		{"only_continents in", Spec{OnlyContinents: []string{"EU"}}, loc("81.2.69.142", "FR"), choice{"scoped", "continent"}},
		{"only_continents out", Spec{OnlyContinents: []string{"EU"}}, loc("81.2.69.142", "JP"), choice{"other", "weight"}},
		{"exclude_countries hit", Spec{ExcludeCountries: []string{"FR"}}, loc("81.2.69.142", "FR"), choice{"other", "weight"}},
		{"exclude_countries miss", Spec{ExcludeCountries: []string{"FR"}}, loc("81.2.69.142", "IT"), choice{"scoped", "continent"}},
		{"ipv6 only, v4 client", Spec{Family: IPv6Only}, loc("81.2.69.142", "FR"), choice{"other", "weight"}},
		{"ipv6 only, v6 client", Spec{Family: IPv6Only}, loc("2001:db8::1", "FR"), choice{"scoped", "continent"}},
		{"ipv4 only, v6 client", Spec{Family: IPv4Only}, loc("2001:db8::1", "FR"), choice{"other", "weight"}},
		{"ipv4 only, v4-mapped client", Spec{Family: IPv4Only}, loc("::ffff:81.2.69.142", "FR"), choice{"scoped", "continent"}},
		{"disabled", Spec{Disabled: true}, loc("81.2.69.142", "FR"), choice{"other", "weight"}},
		{"weight 0 is a last resort", Spec{Weight: weight0}, loc("81.2.69.142", "FR"), choice{"other", "weight"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.mirror
			c.Name, c.Continent = "scoped", "EU"
			ms := []*Mirror{
				mustMirror(t, c, newFake("scoped", k)),
				// Somewhere unknown, so it wins only when "scoped" is out.
				mustMirror(t, Spec{Name: "other"}, newFake("other", k)),
			}
			s := NewSelector(ms, Options{})
			d := s.Choose(t.Context(), Query{Loc: tt.loc, Digest: digest(t, 1)})
			if diff := cmp.Diff(tt.want, choice{d.Mirror, d.Reason}); diff != "" {
				t.Errorf("choice (-want +got):\n%s", diff)
			}
		})
	}
}

func TestChooseFallbacks(t *testing.T) {
	k := keyOf(t, 1)
	fr := loc("81.2.69.142", "FR", 48.9, 2.35)
	tests := []struct {
		name  string
		setup func(near, far *fakeBackend)
		cfg   func(near, far *Spec)
		loc   geo.Location
		want  choice
	}{
		{"nearest", nil, nil, fr, choice{"near", "continent"}},
		{"not present on the nearest", func(n, f *fakeBackend) { delete(n.present, k) }, nil, fr, choice{"far", "distance"}},
		{"not present anywhere", func(n, f *fakeBackend) { delete(n.present, k); delete(f.present, k) }, nil, fr, choice{"", "fallback:not-present"}},
		{"error on the nearest", func(n, f *fakeBackend) { n.err = errFake }, nil, fr, choice{"far", "distance"}},
		{"url error on the nearest", func(n, f *fakeBackend) { n.urlErr = errFake }, nil, fr, choice{"far", "distance"}},
		{"errors everywhere", func(n, f *fakeBackend) { n.err, f.err = errFake, errFake }, nil, fr, choice{"", "fallback:error"}},
		{"error and absent", func(n, f *fakeBackend) { n.err = errFake; delete(f.present, k) }, nil, fr, choice{"", "fallback:error"}},
		{"all disabled", nil, func(n, f *Spec) { n.Disabled, f.Disabled = true, true }, fr, choice{"", "fallback:no-mirror"}},
		{"all out of scope", nil, func(n, f *Spec) { n.OnlyCountries, f.OnlyCountries = []string{"DE"}, []string{"DE"} }, fr, choice{"", "fallback:no-mirror"}},
		{"weight 0 used when nothing else has it", func(n, f *fakeBackend) { delete(f.present, k) }, func(n, f *Spec) { n.Weight = weight0 }, fr, choice{"near", "continent"}},
		{"no geo: by weight", nil, nil, loc("81.2.69.142", ""), choice{"far", "fallback:no-geo"}},
		{"no geo: scoped mirrors are out", nil, func(n, f *Spec) { f.ExcludeCountries = []string{"RU"} }, loc("81.2.69.142", ""), choice{"near", "fallback:no-geo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nb, fb := newFake("near", k), newFake("far", k)
			if tt.setup != nil {
				tt.setup(nb, fb)
			}
			nc := Spec{Name: "near", Country: "DE", Location: atFrankfurt}
			fc := Spec{Name: "far", Country: "US", Location: atVirginia, Weight: 1000}
			if tt.cfg != nil {
				tt.cfg(&nc, &fc)
			}
			s := NewSelector([]*Mirror{mustMirror(t, nc, nb), mustMirror(t, fc, fb)}, Options{})
			d := s.Choose(t.Context(), Query{Loc: tt.loc, Digest: digest(t, 1)})
			if diff := cmp.Diff(tt.want, choice{d.Mirror, d.Reason}); diff != "" {
				t.Errorf("choice (-want +got):\n%s", diff)
			}
			if d.Mirror == "" && (d.URL != nil || d.Size != -1) {
				t.Errorf("upstream decision carries URL %v, size %d", d.URL, d.Size)
			}
			if d.Mirror != "" && (d.URL == nil || d.Size != 1234) {
				t.Errorf("mirror decision has URL %v, size %d", d.URL, d.Size)
			}
		})
	}
}

func TestChooseTimeouts(t *testing.T) {
	k := keyOf(t, 1)
	const timeout = 40 * time.Millisecond
	tests := []struct {
		name       string
		near, far  time.Duration // Stat delays
		want       choice
		atMostTime time.Duration
	}{
		{"slow nearest falls through", time.Second, 0, choice{"far", "distance"}, timeout + 150*time.Millisecond},
		{"everything slow: upstream within the budget", time.Second, time.Second, choice{"", "fallback:error"}, 2*timeout + 150*time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nb, fb := newFake("near", k), newFake("far", k)
			nb.delay, fb.delay = tt.near, tt.far
			s := NewSelector([]*Mirror{
				mustMirror(t, Spec{Name: "near", Country: "DE", Location: atFrankfurt}, nb),
				mustMirror(t, Spec{Name: "far", Country: "US", Location: atVirginia}, fb),
			}, Options{Timeout: timeout})
			start := time.Now()
			d := s.Choose(t.Context(), Query{Loc: loc("81.2.69.142", "FR", 48.9, 2.35), Digest: digest(t, 1)})
			took := time.Since(start)
			if diff := cmp.Diff(tt.want, choice{d.Mirror, d.Reason}); diff != "" {
				t.Errorf("choice (-want +got):\n%s", diff)
			}
			if took > tt.atMostTime {
				t.Errorf("took %v, want at most %v", took, tt.atMostTime)
			}
		})
	}
}

func TestStableAndWeighted(t *testing.T) {
	k := keyOf(t, 1)
	// Two mirrors 30 km apart count as equally near; the third is 300 km away and never wins.
	ms := []*Mirror{
		mustMirror(t, Spec{Name: "light", Country: "DE", Location: at(50.1, 8.7), Weight: 100}, newFake("light", k)),
		mustMirror(t, Spec{Name: "heavy", Country: "DE", Location: at(50.3, 8.9), Weight: 300}, newFake("heavy", k)),
		mustMirror(t, Spec{Name: "far", Country: "DE", Location: at(52.5, 13.4), Weight: 10000}, newFake("far", k)),
	}
	s := NewSelector(ms, Options{})
	q := func(addr string) Query {
		return Query{Loc: loc(addr, "DE", 50.0, 8.5), Digest: digest(t, 1)}
	}

	t.Run("same client, same mirror", func(t *testing.T) {
		for _, addr := range []string{"10.0.0.1", "10.0.0.2", "2001:db8::7"} {
			first := s.Choose(t.Context(), q(addr)).Mirror
			for range 1000 {
				if got := s.Choose(t.Context(), q(addr)).Mirror; got != first {
					t.Fatalf("client %s: got %s after %s", addr, got, first)
				}
			}
		}
	})
	t.Run("across selectors", func(t *testing.T) {
		// Another replica (a new Selector, new cache seeds) must agree.
		other := NewSelector(ms, Options{})
		for i := range 200 {
			a, b := s.Choose(t.Context(), q(ipv4(i))), other.Choose(t.Context(), q(ipv4(i)))
			if a.Mirror != b.Mirror {
				t.Fatalf("client %s: %s on one replica, %s on another", ipv4(i), a.Mirror, b.Mirror)
			}
		}
	})
	t.Run("spread by weight", func(t *testing.T) {
		count := map[string]int{}
		const n = 4000
		for i := range n {
			count[s.Choose(t.Context(), q(ipv4(i))).Mirror]++
		}
		if count["far"] != 0 {
			t.Errorf("far mirror got %d clients", count["far"])
		}
		if share := float64(count["heavy"]) / n; share < 0.70 || share > 0.80 {
			t.Errorf("heavy mirror got %.2f of clients (%v), want about 0.75", share, count)
		}
	})
}

func TestHealth(t *testing.T) {
	k := keyOf(t, 1)
	clk := newClock()
	nb, fb := newFake("near", k), newFake("far", k)
	s := NewSelector([]*Mirror{
		mustMirror(t, Spec{Name: "near", Country: "DE", Location: atFrankfurt}, nb),
		mustMirror(t, Spec{Name: "far", Country: "US", Location: atVirginia}, fb),
	}, Options{Clock: clk.Now, Timeout: 150 * time.Millisecond})
	q := Query{Loc: loc("81.2.69.142", "DE", 52.5, 13.4), Digest: digest(t, 1)}
	choose := func() choice { d := s.Choose(t.Context(), q); return choice{d.Mirror, d.Reason} }

	nb.set(func(f *fakeBackend) { f.delay = time.Second }) // stops answering: each check times out
	for i := range 3 {
		if diff := cmp.Diff(choice{"far", "distance"}, choose()); diff != "" {
			t.Fatalf("failure %d (-want +got):\n%s", i+1, diff)
		}
	}
	h := healthOf(s, "near")
	if h.Healthy || h.Failures != 3 || !h.DownUntil.Equal(clk.Now().Add(10*time.Second)) {
		t.Fatalf("after 3 timeouts: %+v", h)
	}

	// Set aside: no more calls, no more waiting.
	calls := nb.stats.Load()
	start := time.Now()
	if diff := cmp.Diff(choice{"far", "distance"}, choose()); diff != "" {
		t.Fatalf("while set aside (-want +got):\n%s", diff)
	}
	if took := time.Since(start); took > 50*time.Millisecond || nb.stats.Load() != calls {
		t.Fatalf("a mirror set aside cost %v and %d calls", took, nb.stats.Load()-calls)
	}

	// After the back-off one probe runs in the background, still failing: the back-off doubles.
	clk.Add(10 * time.Second)
	choose()
	waitFor(t, "failed probe", func() bool { return healthOf(s, "near").DownUntil.Equal(clk.Now().Add(20 * time.Second)) })
	if got := nb.stats.Load() - calls; got != 1 {
		t.Fatalf("probe made %d calls, want 1", got)
	}

	// It answers again: the next probe brings it back.
	nb.set(func(f *fakeBackend) { f.delay = 0 })
	clk.Add(20 * time.Second)
	if diff := cmp.Diff(choice{"far", "distance"}, choose()); diff != "" {
		t.Fatalf("the request starting the probe must not wait for it (-want +got):\n%s", diff)
	}
	waitFor(t, "recovery", func() bool { return healthOf(s, "near").Healthy })
	if diff := cmp.Diff(choice{"near", "country"}, choose()); diff != "" {
		t.Fatalf("after recovery (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(MirrorHealth{Name: "near", Enabled: true, Healthy: true, LastError: h.LastError}, healthOf(s, "near")); diff != "" {
		t.Errorf("health after recovery (-want +got):\n%s", diff)
	}

	t.Run("only mirror unhealthy", func(t *testing.T) {
		b := newFake("only", k)
		b.err = errFake
		s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "only"}, b)}, Options{Clock: clk.Now})
		for range 3 {
			s.Choose(t.Context(), q)
		}
		if d := s.Choose(t.Context(), q); d.Reason != ReasonUnhealthy {
			t.Errorf("reason %q, want %q", d.Reason, ReasonUnhealthy)
		}
	})
}

func TestRunProbesHotMirrors(t *testing.T) {
	// Every request is answered from the caches, so only Run can notice the mirror is gone.
	k := keyOf(t, 1)
	b := newFake("hot", k)
	s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "hot"}, b)}, Options{ProbeInterval: 5 * time.Millisecond})
	q := Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, 1)}
	if d := s.Choose(t.Context(), q); d.Mirror != "hot" {
		t.Fatalf("warm-up chose %q", name(d))
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	defer wg.Wait()
	defer cancel()

	b.set(func(f *fakeBackend) { f.err = errFake })
	waitFor(t, "set aside", func() bool { return !healthOf(s, "hot").Healthy })
	if d := s.Choose(t.Context(), q); d.Reason != ReasonUnhealthy {
		t.Errorf("reason %q, want %q", d.Reason, ReasonUnhealthy)
	}
}

func TestPresenceCache(t *testing.T) {
	clk := newClock()
	k1, k2 := keyOf(t, 1), keyOf(t, 2)
	setup := func(t *testing.T, opts Options) (*Selector, *fakeBackend) {
		b := newFake("m", k1)
		opts.Clock = clk.Now
		return NewSelector([]*Mirror{mustMirror(t, Spec{Name: "m"}, b)}, opts), b
	}
	q := func(n int) Query { return Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, n)} }
	_ = k2

	t.Run("hits do not call the backend", func(t *testing.T) {
		s, b := setup(t, Options{})
		for range 10 {
			if d := s.Choose(t.Context(), q(1)); d.Mirror != "m" {
				t.Fatalf("chose %q", name(d))
			}
		}
		clk.Add(23 * time.Hour)
		s.Choose(t.Context(), q(1))
		if got := b.stats.Load(); got != 1 {
			t.Errorf("%d backend calls within HitTTL, want 1", got)
		}
		clk.Add(2 * time.Hour)
		s.Choose(t.Context(), q(1))
		if got := b.stats.Load(); got != 2 {
			t.Errorf("%d backend calls after HitTTL, want 2", got)
		}
	})
	t.Run("misses expire after MissTTL", func(t *testing.T) {
		s, b := setup(t, Options{})
		s.Choose(t.Context(), q(2))
		clk.Add(29 * time.Second)
		s.Choose(t.Context(), q(2))
		if got := b.stats.Load(); got != 1 {
			t.Fatalf("%d backend calls within MissTTL, want 1", got)
		}
		b.set(func(f *fakeBackend) { f.present[k2] = 99 }) // sync copied it
		clk.Add(2 * time.Second)
		if d := s.Choose(t.Context(), q(2)); d.Mirror != "m" || d.Size != 99 || b.stats.Load() != 2 {
			t.Errorf("after MissTTL: chose %q size %d with %d calls", name(d), d.Size, b.stats.Load())
		}
	})
	t.Run("errors are not cached", func(t *testing.T) {
		s, b := setup(t, Options{HealthAfter: 100})
		b.err = errFake
		s.Choose(t.Context(), q(1))
		s.Choose(t.Context(), q(1))
		if got := b.stats.Load(); got != 2 {
			t.Errorf("%d backend calls, want 2", got)
		}
	})
	t.Run("concurrent checks are merged", func(t *testing.T) {
		s, b := setup(t, Options{})
		gate := make(chan struct{})
		b.gate = gate
		var wg sync.WaitGroup
		got := make([]string, 50)
		for i := range got {
			wg.Go(func() { got[i] = name(s.Choose(t.Context(), q(1))) })
		}
		waitFor(t, "first check", func() bool { return b.stats.Load() == 1 })
		time.Sleep(20 * time.Millisecond) // let the others join the flight
		close(gate)
		wg.Wait()
		if n := b.stats.Load(); n != 1 {
			t.Errorf("%d backend calls for 50 concurrent requests, want 1", n)
		}
		for i, g := range got {
			if g != "m" {
				t.Errorf("request %d chose %s", i, g)
			}
		}
	})
	t.Run("one client hanging up does not fail the others", func(t *testing.T) {
		s, b := setup(t, Options{})
		gate := make(chan struct{})
		b.gate = gate
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		var quitter, stayer Decision
		wg.Go(func() { quitter = s.Choose(ctx, q(1)) })
		waitFor(t, "first check", func() bool { return b.stats.Load() == 1 })
		wg.Go(func() { stayer = s.Choose(t.Context(), q(1)) })
		time.Sleep(10 * time.Millisecond)
		cancel()
		time.Sleep(10 * time.Millisecond)
		close(gate)
		wg.Wait()
		if quitter.Mirror != "" || stayer.Mirror != "m" || b.stats.Load() != 1 {
			t.Errorf("quitter %q, stayer %q, %d calls", name(quitter), name(stayer), b.stats.Load())
		}
	})
}

func TestURLCache(t *testing.T) {
	k := keyOf(t, 1)
	tests := []struct {
		name      string
		sign      bool
		after     time.Duration
		wantCalls int32
	}{
		{"signed, reused with more than half its life left", true, 7*time.Minute + 29*time.Second, 1},
		{"signed, re-signed after half its life", true, 7*time.Minute + 31*time.Second, 2},
		{"unsigned, reused", false, 23 * time.Hour, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			b := newFake("m", k)
			b.sign, b.clock = tt.sign, clk.Now
			s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "m"}, b)}, Options{Clock: clk.Now})
			q := Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, 1), Method: "GET"}
			first := s.Choose(t.Context(), q)
			clk.Add(tt.after)
			second := s.Choose(t.Context(), q)
			if got := b.urls.Load(); got != tt.wantCalls {
				t.Errorf("%d URL requests, want %d", got, tt.wantCalls)
			}
			if reused := first.URL.String() == second.URL.String(); reused != (tt.wantCalls == 1) {
				t.Errorf("reused %v: %s then %s", reused, first.URL, second.URL)
			}
			if tt.sign && !second.Expires.After(clk.Now().Add(7*time.Minute)) {
				t.Errorf("URL expires at %v, less than half its life after now %v", second.Expires, clk.Now())
			}
			// HEAD gets its own URL: a signature covers the method.
			q.Method = "HEAD"
			if h := s.Choose(t.Context(), q); h.URL.String() == second.URL.String() && tt.sign {
				t.Errorf("HEAD reused the GET URL %s", h.URL)
			}
		})
	}
}

// NewMirror keeps what it is given: checking and defaults are the configuration's job.
func TestNewMirror(t *testing.T) {
	spec := Spec{
		Name: "m", Provider: "s3", Prefix: "p/", Weight: 7, SigningTTL: time.Minute, Country: "RU", Continent: "AS",
		Location: at(55.7, 37.6), Networks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Family: IPv6Only,
	}
	m := NewMirror(spec, newFake("m"))
	got := []any{m.Name(), m.Provider(), m.Prefix(), m.weight, m.signingTTL, m.country, m.continent, m.hasLoc, m.enabled, m.family, fmtPrefixes(m.Networks()), m.netTag}
	want := []any{"m", "s3", "p/", 7, time.Minute, "RU", "AS", true, true, IPv6Only, "[10.0.0.0/8]", "net:m"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mirror (-want +got):\n%s", diff)
	}
	if NewMirror(Spec{Name: "off", Disabled: true}, newFake("off")).enabled {
		t.Error("a disabled spec built an enabled mirror")
	}
}

func TestCacheBound(t *testing.T) {
	c := newCache[int, int](3, func(k int) uint64 { return uint64(k) })
	const far = int64(1 << 62)
	for k := range 3 {
		c.put(k, k, far, 0)
	}
	c.get(0, 0) // recently used: survives the next eviction
	c.put(3, 3, far, 0)
	c.put(4, 4, far, 0)
	if n := c.len(); n != 3 {
		t.Errorf("len %d, want 3", n)
	}
	var have []int
	for k := range 5 {
		if _, ok := c.get(k, 0); ok {
			have = append(have, k)
		}
	}
	if diff := cmp.Diff([]int{0, 3, 4}, have); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
	// An expired entry goes before a live one, even a recently used one.
	c = newCache[int, int](2, func(k int) uint64 { return uint64(k) })
	c.put(0, 0, far, 0)
	c.put(1, 1, 10, 0)
	c.get(0, 0)
	c.get(1, 0)
	c.put(2, 2, far, 20)
	if _, ok := c.get(0, 20); !ok {
		t.Error("live entry evicted while an expired one was kept")
	}

	t.Run("selector presence cache is bounded", func(t *testing.T) {
		b := newFake("m")
		s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "m"}, b)}, Options{CacheSize: 10})
		for i := range 100 {
			s.Choose(t.Context(), Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, i)})
		}
		if n := s.presence.len(); n != 10 {
			t.Errorf("presence cache holds %d entries, want 10", n)
		}
	})
}

func TestChooseCanceled(t *testing.T) {
	b := newFake("m", keyOf(t, 1))
	b.delay = time.Second
	s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "m"}, b)}, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	d := s.Choose(ctx, Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, 1)})
	if d.Mirror != "" || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("chose %q", name(d))
	}
}

// TestCacheGrowsWithUse checks that a large cache holds nothing before it is used, and keeps its
// bound as it fills.
func TestCacheGrowsWithUse(t *testing.T) {
	const size = 100000
	c := newCache[int, int](size, func(k int) uint64 { return uint64(k) * 0x9e3779b97f4a7c15 })
	capacity := func() (n int) {
		for i := range c.shards {
			n += cap(c.shards[i].ring)
		}
		return n
	}
	if n := capacity(); n != 0 {
		t.Errorf("an unused cache holds rings for %d entries", n)
	}
	const far = int64(1 << 62)
	for k := range size + size/2 {
		c.put(k, k, far, 0)
	}
	if n := c.len(); n > size+len(c.shards) || n < size-len(c.shards) {
		t.Errorf("len %d after %d puts, want about %d", n, size+size/2, size)
	}
	if n := capacity(); n > 2*size {
		t.Errorf("rings hold %d slots for a bound of %d", n, size)
	}
}

// TestChooseWarmReadsClockOnce: a choice answered from the caches reads the clock once, for
// health and both caches together; a second read is as costly as a cache lookup.
func TestChooseWarmReadsClockOnce(t *testing.T) {
	clk := newClock()
	var reads atomic.Int32
	ms := []*Mirror{
		mustMirror(t, Spec{Name: "de", Country: "DE", Location: atFrankfurt}, newFake("de", Key("blobs/", digest(t, 1)))),
		mustMirror(t, Spec{Name: "us", Country: "US", Location: atVirginia}, newFake("us", Key("blobs/", digest(t, 1)))),
	}
	s := NewSelector(ms, Options{Clock: func() time.Time { reads.Add(1); return clk.Now() }})
	q := Query{Loc: loc("89.160.20.112", "DE", 50.1, 8.7), Digest: digest(t, 1), Method: "GET"}
	if d := s.Choose(t.Context(), q); d.Mirror != "de" {
		t.Fatalf("cold choice: %s (%s)", name(d), d.Reason)
	}
	reads.Store(0)
	if d := s.Choose(t.Context(), q); d.Mirror != "de" {
		t.Fatalf("warm choice: %s (%s)", name(d), d.Reason)
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("a warm choice read the clock %d times, want 1", n)
	}
}

// TestChooseMissedAndDistance: a decision names the first-ranked mirror when it lacked the blob
// (not when it failed or was merely not first), and carries the distance to the mirror chosen.
func TestChooseMissedAndDistance(t *testing.T) {
	k := keyOf(t, 1)
	fr := loc("81.2.69.142", "FR", 48.9, 2.35)
	tests := []struct {
		name       string
		setup      func(near, far *fakeBackend)
		loc        geo.Location
		wantMirror string
		wantMissed string
		wantKm     [2]float64 // a range; {-1, -1} for unknown
	}{
		{"served by the first", nil, fr, "near", "", [2]float64{450, 500}},
		{"first lacks it", func(n, f *fakeBackend) { delete(n.present, k) }, fr, "far", "near", [2]float64{6100, 6300}},
		{"first lacks it, nobody has it", func(n, f *fakeBackend) { delete(n.present, k); delete(f.present, k) }, fr, "", "near", [2]float64{-1, -1}},
		{"second lacks it", func(n, f *fakeBackend) { delete(f.present, k) }, fr, "near", "", [2]float64{450, 500}},
		{"first fails: no miss", func(n, f *fakeBackend) { n.err = errFake }, fr, "far", "", [2]float64{6100, 6300}},
		{"no coordinates", nil, loc("81.2.69.142", "FR"), "near", "", [2]float64{-1, -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nb, fb := newFake("near", k), newFake("far", k)
			if tt.setup != nil {
				tt.setup(nb, fb)
			}
			s := NewSelector([]*Mirror{
				mustMirror(t, Spec{Name: "near", Country: "DE", Location: atFrankfurt}, nb),
				mustMirror(t, Spec{Name: "far", Country: "US", Location: atVirginia}, fb),
			}, Options{})
			d := s.Choose(t.Context(), Query{Loc: tt.loc, Digest: digest(t, 1)})
			if d.Mirror != tt.wantMirror || d.Missed != tt.wantMissed {
				t.Errorf("mirror %q, missed %q; want %q, %q", d.Mirror, d.Missed, tt.wantMirror, tt.wantMissed)
			}
			if d.DistanceKm < tt.wantKm[0] || d.DistanceKm > tt.wantKm[1] {
				t.Errorf("distance %.1f km; want %v", d.DistanceKm, tt.wantKm)
			}
			// Explain makes the same decision, misses included.
			e := s.Explain(t.Context(), Query{Loc: tt.loc, Digest: digest(t, 1)})
			if e.Decision.Missed != tt.wantMissed {
				t.Errorf("Explain: missed %q; want %q", e.Decision.Missed, tt.wantMissed)
			}
		})
	}
}
