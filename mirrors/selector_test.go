package mirrors

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/geo"
)

// world is a mirror table spread over three continents; every mirror holds blob 1.
func world(t *testing.T) []*Mirror {
	t.Helper()
	k := keyOf(t, 1)
	return []*Mirror{
		mustMirror(t, config.Mirror{Name: "us-east", Country: "US", Location: atVirginia, CloudRegions: []string{"aws:us-east-1"}}, newFake("us-east", k)),
		mustMirror(t, config.Mirror{Name: "us-west", Country: "US", Location: atOregon}, newFake("us-west", k)),
		mustMirror(t, config.Mirror{Name: "eu-west", Country: "DE", Location: atFrankfurt}, newFake("eu-west", k)),
		mustMirror(t, config.Mirror{Name: "eu-north", Country: "SE", Location: atStockholm}, newFake("eu-north", k)),
		mustMirror(t, config.Mirror{Name: "asia", Country: "SG", Location: atSingapore}, newFake("asia", k)),
		mustMirror(t, config.Mirror{Name: "corp", Networks: []string{"192.0.2.0/24"}}, newFake("corp", k)),
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
		mirror config.Mirror
		loc    geo.Location
		want   choice
	}{
		{"only_countries in", config.Mirror{OnlyCountries: []string{"de", "AT"}}, loc("81.2.69.142", "AT"), choice{"scoped", "continent"}},
		{"only_countries out", config.Mirror{OnlyCountries: []string{"DE", "AT"}}, loc("81.2.69.142", "CH"), choice{"other", "weight"}},
		{"only_countries, unknown country", config.Mirror{OnlyCountries: []string{"DE"}}, loc("81.2.69.142", ""), choice{"other", "fallback:no-geo"}},
		{"only_continents in", config.Mirror{OnlyContinents: []string{"EU"}}, loc("81.2.69.142", "FR"), choice{"scoped", "continent"}},
		{"only_continents out", config.Mirror{OnlyContinents: []string{"EU"}}, loc("81.2.69.142", "JP"), choice{"other", "weight"}},
		{"exclude_countries hit", config.Mirror{ExcludeCountries: []string{"FR"}}, loc("81.2.69.142", "FR"), choice{"other", "weight"}},
		{"exclude_countries miss", config.Mirror{ExcludeCountries: []string{"FR"}}, loc("81.2.69.142", "IT"), choice{"scoped", "continent"}},
		{"ipv6 only, v4 client", config.Mirror{AddressFamily: "ipv6"}, loc("81.2.69.142", "FR"), choice{"other", "weight"}},
		{"ipv6 only, v6 client", config.Mirror{AddressFamily: "ipv6"}, loc("2001:db8::1", "FR"), choice{"scoped", "continent"}},
		{"ipv4 only, v6 client", config.Mirror{AddressFamily: "ipv4"}, loc("2001:db8::1", "FR"), choice{"other", "weight"}},
		{"ipv4 only, v4-mapped client", config.Mirror{AddressFamily: "ipv4"}, loc("::ffff:81.2.69.142", "FR"), choice{"scoped", "continent"}},
		{"disabled", config.Mirror{Enabled: ptr(false)}, loc("81.2.69.142", "FR"), choice{"other", "weight"}},
		{"weight 0 is a last resort", config.Mirror{Weight: ptr(0)}, loc("81.2.69.142", "FR"), choice{"other", "weight"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.mirror
			c.Name, c.Continent = "scoped", "EU"
			ms := []*Mirror{
				mustMirror(t, c, newFake("scoped", k)),
				// Somewhere unknown, so it wins only when "scoped" is out.
				mustMirror(t, config.Mirror{Name: "other"}, newFake("other", k)),
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
		cfg   func(near, far *config.Mirror)
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
		{"all disabled", nil, func(n, f *config.Mirror) { n.Enabled, f.Enabled = ptr(false), ptr(false) }, fr, choice{"", "fallback:no-mirror"}},
		{"all out of scope", nil, func(n, f *config.Mirror) { n.OnlyCountries, f.OnlyCountries = []string{"DE"}, []string{"DE"} }, fr, choice{"", "fallback:no-mirror"}},
		{"weight 0 used when nothing else has it", func(n, f *fakeBackend) { delete(f.present, k) }, func(n, f *config.Mirror) { n.Weight = ptr(0) }, fr, choice{"near", "continent"}},
		{"no geo: by weight", nil, nil, loc("81.2.69.142", ""), choice{"far", "fallback:no-geo"}},
		{"no geo: scoped mirrors are out", nil, func(n, f *config.Mirror) { f.ExcludeCountries = []string{"RU"} }, loc("81.2.69.142", ""), choice{"near", "fallback:no-geo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nb, fb := newFake("near", k), newFake("far", k)
			if tt.setup != nil {
				tt.setup(nb, fb)
			}
			nc := config.Mirror{Name: "near", Country: "DE", Location: atFrankfurt}
			fc := config.Mirror{Name: "far", Country: "US", Location: atVirginia, Weight: ptr(1000)}
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
				mustMirror(t, config.Mirror{Name: "near", Country: "DE", Location: atFrankfurt}, nb),
				mustMirror(t, config.Mirror{Name: "far", Country: "US", Location: atVirginia}, fb),
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
		mustMirror(t, config.Mirror{Name: "light", Country: "DE", Location: &config.Location{Lat: 50.1, Lon: 8.7}, Weight: ptr(100)}, newFake("light", k)),
		mustMirror(t, config.Mirror{Name: "heavy", Country: "DE", Location: &config.Location{Lat: 50.3, Lon: 8.9}, Weight: ptr(300)}, newFake("heavy", k)),
		mustMirror(t, config.Mirror{Name: "far", Country: "DE", Location: &config.Location{Lat: 52.5, Lon: 13.4}, Weight: ptr(10000)}, newFake("far", k)),
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
		mustMirror(t, config.Mirror{Name: "near", Country: "DE", Location: atFrankfurt}, nb),
		mustMirror(t, config.Mirror{Name: "far", Country: "US", Location: atVirginia}, fb),
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
		s := NewSelector([]*Mirror{mustMirror(t, config.Mirror{Name: "only"}, b)}, Options{Clock: clk.Now})
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
	s := NewSelector([]*Mirror{mustMirror(t, config.Mirror{Name: "hot"}, b)}, Options{ProbeInterval: 5 * time.Millisecond})
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
		return NewSelector([]*Mirror{mustMirror(t, config.Mirror{Name: "m"}, b)}, opts), b
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
			s := NewSelector([]*Mirror{mustMirror(t, config.Mirror{Name: "m"}, b)}, Options{Clock: clk.Now})
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

func TestNewMirror(t *testing.T) {
	b := newFake("m")
	tests := []struct {
		name    string
		c       config.Mirror
		ttl     time.Duration
		wantErr string
		check   func(*Mirror) string
	}{
		{name: "defaults", c: config.Mirror{Name: "m", Country: "de"}, check: func(m *Mirror) string {
			return cmp.Diff([]any{"DE", "EU", 100, true, 15 * time.Minute}, []any{m.country, m.continent, m.weight, m.enabled, m.signingTTL})
		}},
		{name: "configured continent wins", c: config.Mirror{Name: "m", Country: "RU", Continent: "as"}, check: func(m *Mirror) string {
			return cmp.Diff("AS", m.continent)
		}},
		{name: "mirror ttl wins", c: config.Mirror{Name: "m", SigningTTL: time.Minute}, ttl: time.Hour, check: func(m *Mirror) string {
			return cmp.Diff(time.Minute, m.signingTTL)
		}},
		{name: "networks are masked", c: config.Mirror{Name: "m", Networks: []string{"10.1.2.3/8", "2001:db8::/32"}}, check: func(m *Mirror) string {
			return cmp.Diff("[10.0.0.0/8 2001:db8::/32]", fmtPrefixes(m.Networks()))
		}},
		{name: "no name", c: config.Mirror{}, wantErr: "mirror has no name"},
		{name: "bad network", c: config.Mirror{Name: "m", Networks: []string{"10.0.0.0/33"}}, wantErr: `mirror "m": networks: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`},
		{name: "bad family", c: config.Mirror{Name: "m", AddressFamily: "ipx"}, wantErr: `mirror "m": address_family "ipx" is not ipv4 or ipv6`},
		{name: "negative weight", c: config.Mirror{Name: "m", Weight: ptr(-1)}, wantErr: `mirror "m": weight -1 is negative`},
		{name: "off the planet", c: config.Mirror{Name: "m", Location: &config.Location{Lat: 91}}, wantErr: `mirror "m": location 91,0 is not a point on Earth`},
		{name: "several problems at once", c: config.Mirror{Name: "m", Weight: ptr(-1), AddressFamily: "x"}, wantErr: "mirror \"m\": weight -1 is negative\naddress_family \"x\" is not ipv4 or ipv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMirror(tt.c, b, tt.ttl)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := tt.check(m); diff != "" {
				t.Error(diff)
			}
		})
	}
	if _, err := NewMirror(config.Mirror{Name: "m"}, nil, 0); err == nil {
		t.Error("no error for a nil backend")
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
		s := NewSelector([]*Mirror{mustMirror(t, config.Mirror{Name: "m"}, b)}, Options{CacheSize: 10})
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
	s := NewSelector([]*Mirror{mustMirror(t, config.Mirror{Name: "m"}, b)}, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	d := s.Choose(ctx, Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, 1)})
	if d.Mirror != "" || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Errorf("chose %q", name(d))
	}
}
