package mirrors

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/geo"
	"github.com/happy-turtle/oci-proxy/geo/codes"
	"github.com/happy-turtle/oci-proxy/oci"
)

// fakeBackend holds the keys in present; err and delay apply to every Stat, keyErr to the Stats
// of one key.
type fakeBackend struct {
	name  string
	clock func() time.Time
	sign  bool // URLs carry a signature and expire after the requested ttl

	mu      sync.Mutex
	present map[string]int64 // key -> size
	err     error
	keyErr  map[string]error
	asked   map[string]int // Stats by key
	urlErr  error
	delay   time.Duration
	gate    chan struct{} // when set, Stat waits for it to close

	stats, urls atomic.Int32
}

func newFake(name string, keys ...string) *fakeBackend {
	f := &fakeBackend{name: name, clock: time.Now, present: map[string]int64{}, keyErr: map[string]error{}, asked: map[string]int{}}
	for _, k := range keys {
		f.present[k] = 1234
	}
	return f
}

func (f *fakeBackend) set(fn func(f *fakeBackend)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeBackend) Stat(ctx context.Context, key string) (Object, error) {
	f.stats.Add(1)
	f.mu.Lock()
	f.asked[key]++
	delay, gate, err := f.delay, f.gate, f.err
	if e, ok := f.keyErr[key]; ok {
		err = e
	}
	size, ok := f.present[key]
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Object{}, ctx.Err()
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return Object{}, ctx.Err()
		}
	}
	if err != nil {
		return Object{}, err
	}
	if !ok {
		return Object{Size: -1}, nil
	}
	return Object{Exists: true, Size: size}, nil
}

func (f *fakeBackend) URL(_ context.Context, method, key string, ttl time.Duration) (*url.URL, time.Time, error) {
	n := f.urls.Add(1)
	f.mu.Lock()
	err := f.urlErr
	f.mu.Unlock()
	if err != nil {
		return nil, time.Time{}, err
	}
	u := &url.URL{Scheme: "https", Host: f.name + ".example", Path: "/" + key}
	if !f.sign {
		return u, time.Time{}, nil
	}
	u.RawQuery = fmt.Sprintf("X-Signature=secret%d&method=%s", n, method)
	return u, f.clock().Add(ttl), nil
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var errFake = errors.New("backend on fire")

func digest(t testing.TB, n int) oci.Digest {
	t.Helper()
	d, err := oci.ParseDigest(fmt.Sprintf("sha256:%064x", n))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func keyOf(t testing.TB, n int) string { return Key("blobs/", digest(t, n)) }

// weight0 in a test's Spec asks for weight 0: mustMirror gives a zero Weight the configuration's
// default, as most tests want.
const weight0 = -1

// mustMirror builds a Mirror from c with the defaults the configuration would have applied.
func mustMirror(t testing.TB, c Spec, b Backend) *Mirror {
	t.Helper()
	if c.Prefix == "" {
		c.Prefix = "blobs/"
	}
	if c.Provider == "" {
		c.Provider = "http"
	}
	switch c.Weight {
	case 0:
		c.Weight = 100
	case weight0:
		c.Weight = 0
	}
	if c.SigningTTL == 0 {
		c.SigningTTL = 15 * time.Minute
	}
	if c.Continent == "" {
		c.Continent = codes.ContinentOf(c.Country)
	}
	return NewMirror(c, b)
}

// at is a mirror location.
func at(lat, lon float64) *geo.Point {
	p := geo.PointAt(lat, lon)
	return &p
}

// Places used across the tests.
var (
	atFrankfurt = at(50.1, 8.7)
	atStockholm = at(59.3, 18.1)
	atVirginia  = at(38.9, -77.4)
	atOregon    = at(45.6, -121.2)
	atSingapore = at(1.35, 103.8)
)

func loc(addr, country string, coords ...float64) geo.Location {
	l := geo.Location{Country: country, Continent: codes.ContinentOf(country)}
	if addr != "" {
		l.Addr = netip.MustParseAddr(addr)
	}
	if len(coords) == 2 {
		l.Lat, l.Lon, l.HasCoords = coords[0], coords[1], true
	}
	return l
}

func withTags(l geo.Location, tags ...string) geo.Location {
	l.Tags = tags
	return l
}

// names returns the mirror names of ds, "upstream" for the upstream, for compact comparisons.
func name(d Decision) string {
	if d.Mirror == "" {
		return "upstream"
	}
	return d.Mirror
}

func ipv4(n int) string { return fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255) }

// waitFor polls cond for up to a second: background probes finish on their own schedule.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func healthOf(s *Selector, mirror string) MirrorHealth {
	for _, h := range s.Health() {
		if h.Name == mirror {
			return h
		}
	}
	return MirrorHealth{}
}

func fmtPrefixes(ps []netip.Prefix) string {
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	return "[" + strings.Join(ss, " ") + "]"
}
