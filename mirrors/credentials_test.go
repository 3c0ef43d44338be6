package mirrors

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// deniedErr is how a backend reports a 403.
func deniedErr(key string) error { return fmt.Errorf("stat %s: %w (403 Forbidden)", key, ErrDenied) }

// lockedBuffer collects log lines written from the probes' goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// credWorld is a mirror with credentials, near the client, and a public one far away.
func credWorld(t *testing.T, near *fakeBackend, opts Options) *Selector {
	t.Helper()
	k := keyOf(t, 1)
	return NewSelector([]*Mirror{
		mustMirror(t, Spec{Name: "near", Provider: "s3", CheckCredentials: true, Country: "DE", Location: atFrankfurt}, near),
		mustMirror(t, Spec{Name: "far", Country: "US", Location: atVirginia}, newFake("far", k)),
	}, opts)
}

// runFor runs s's background probes until the test ends.
func runFor(t *testing.T, s *Selector) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestCredentialsProbe checks what the background probe of ProbeKey makes of each answer.
func TestCredentialsProbe(t *testing.T) {
	probe := ProbeKey("blobs/")
	tests := []struct {
		name      string
		setup     func(f *fakeBackend)
		warm      bool // a request finds blob 1 on near before the first probe
		wantCreds string
		want      choice
		wantNote  string // near's note in an explanation
	}{
		{"probe object read", func(f *fakeBackend) { f.present[probe] = 16 }, false, "ok", choice{"near", "country"}, "chosen"},
		{"no probe object yet", func(f *fakeBackend) {}, false, "no-probe", choice{"near", "country"}, "chosen"},
		{"refused", func(f *fakeBackend) { f.err = deniedErr("any") }, false, "refused", choice{"far", "distance"},
			`credentials refused: probe on mirror "near": stat any: access denied (403 Forbidden)`},
		{"probe refused, but a blob found before is readable", func(f *fakeBackend) { f.keyErr[probe] = deniedErr(probe) }, true,
			"unverified", choice{"near", "country"}, "chosen"},
		{"refused after blobs were found", func(f *fakeBackend) { f.err = deniedErr("any") }, true, "refused", choice{"far", "distance"},
			`credentials refused: probe on mirror "near": stat any: access denied (403 Forbidden)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			near := newFake("near", keyOf(t, 1))
			logs := &lockedBuffer{}
			s := credWorld(t, near, Options{ProbeInterval: 2 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			q := Query{Loc: loc("81.2.69.142", "DE", 52.5, 13.4), Digest: digest(t, 1)}
			if tt.warm {
				if d := s.Choose(t.Context(), q); d.Mirror != "near" {
					t.Fatalf("warm-up chose %q", name(d))
				}
			}
			near.set(tt.setup)
			runFor(t, s)
			waitFor(t, "a probe's answer", func() bool { return healthOf(s, "near").Credentials != "unchecked" })
			time.Sleep(20 * time.Millisecond) // many more probes
			h := healthOf(s, "near")
			if h.Credentials != tt.wantCreds || h.Healthy != (tt.wantCreds != "refused") {
				t.Errorf("health %+v, want credentials %q", h, tt.wantCreds)
			}
			// A blob not cached yet, so that the choice depends on the mirror's state only.
			q.Digest = digest(t, 2)
			near.set(func(f *fakeBackend) { f.present[keyOf(t, 2)] = 1 })
			d := s.Choose(t.Context(), q)
			if tt.want.Mirror == "far" {
				// far holds only blob 1
				q.Digest = digest(t, 1)
				d = s.Choose(t.Context(), q)
			}
			if diff := cmp.Diff(tt.want, choice{d.Mirror, d.Reason}); diff != "" {
				t.Errorf("choice (-want +got):\n%s", diff)
			}
			e := s.Explain(t.Context(), q)
			if got := e.Mirrors[0]; got.Excluded != tt.wantNote && !(got.Chosen && tt.wantNote == "chosen") {
				t.Errorf("explained near: %+v, want note %q", got, tt.wantNote)
			}
			wantLogs := map[string]int{"refused": 1, "unverified": 0}[tt.wantCreds]
			if n := logs.count("mirror credentials refused"); n != wantLogs {
				t.Errorf("%d log lines for refused credentials, want %d:\n%s", n, wantLogs, logs.b.String())
			}
			if n := logs.count("mirror probe object refused though blobs are readable"); n != map[bool]int{true: 1}[tt.wantCreds == "unverified"] {
				t.Errorf("%d log lines for an unverified probe:\n%s", n, logs.b.String())
			}
		})
	}
}

// TestCredentialsRecovery checks that a mirror out for refused credentials comes back as soon as
// the probe object is read again, and says so once.
func TestCredentialsRecovery(t *testing.T) {
	near := newFake("near", keyOf(t, 1))
	near.err = deniedErr("any")
	logs := &lockedBuffer{}
	s := credWorld(t, near, Options{ProbeInterval: 2 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	runFor(t, s)
	q := Query{Loc: loc("81.2.69.142", "DE", 52.5, 13.4), Digest: digest(t, 1)}
	waitFor(t, "refused", func() bool { return healthOf(s, "near").Credentials == "refused" })
	if d := s.Choose(t.Context(), q); d.Mirror != "far" {
		t.Fatalf("chose %q (%s) while refused", name(d), d.Reason)
	}

	near.set(func(f *fakeBackend) { f.err = nil; f.present[ProbeKey("blobs/")] = 16 })
	waitFor(t, "accepted", func() bool { h := healthOf(s, "near"); return h.Credentials == "ok" && h.Healthy })
	if d := s.Choose(t.Context(), q); d.Mirror != "near" {
		t.Errorf("chose %q (%s) after recovery", name(d), d.Reason)
	}
	if n := logs.count("mirror credentials accepted again"); n != 1 {
		t.Errorf("%d recovery log lines, want 1", n)
	}
}

// TestCredentialsEvidence starts without a probe object on a bucket the proxy may not list (a 403
// for it) and no blob found yet: the mirror is out, until a client asks for a blob it holds,
// which shows the credentials work.
func TestCredentialsEvidence(t *testing.T) {
	clk := newClock()
	near := newFake("near", keyOf(t, 1))
	near.keyErr[ProbeKey("blobs/")] = deniedErr(ProbeKey("blobs/"))
	s := credWorld(t, near, Options{Clock: clk.Now})
	q := Query{Loc: loc("81.2.69.142", "DE", 52.5, 13.4), Digest: digest(t, 1)}

	e := s.Explain(t.Context(), Query{Loc: q.Loc}) // asks the mirrors not probed yet, like `oci-proxy resolve`
	if got := e.Mirrors[0].Excluded; !strings.HasPrefix(got, "credentials refused: ") {
		t.Fatalf("explained near: %q, want credentials refused", got)
	}
	if d := s.Choose(t.Context(), q); d.Mirror != "far" {
		t.Fatalf("first request: %q (%s)", name(d), d.Reason)
	}
	waitFor(t, "recheck with the request's blob", func() bool { return healthOf(s, "near").Credentials == "unverified" })
	if d := s.Choose(t.Context(), q); d.Mirror != "near" {
		t.Errorf("after the recheck: %q (%s)", name(d), d.Reason)
	}

	t.Run("a blob it lacks is no evidence", func(t *testing.T) {
		near := newFake("near")
		near.err = deniedErr("any")
		s := credWorld(t, near, Options{Clock: clk.Now})
		s.Explain(t.Context(), Query{Loc: q.Loc})
		for range 2 {
			s.Choose(t.Context(), q)
			waitFor(t, "recheck done", func() bool { return !s.state[0].probing.Load() })
			clk.Add(10 * time.Second) // one recheck per back-off
		}
		if h := healthOf(s, "near"); h.Credentials != "refused" || h.Healthy {
			t.Errorf("health %+v, want still refused", h)
		}
		if n := near.stats.Load(); n != 5 {
			t.Errorf("%d checks, want 5: the probe, then probe and blob on each of two rechecks", n)
		}
	})
}

// TestCredentialsNotChecked checks that a mirror without credentials is never asked about the
// probe object, and that its 403s are absences.
func TestCredentialsNotChecked(t *testing.T) {
	cdn := newFake("cdn")
	cdn.err = deniedErr("any")
	s := NewSelector([]*Mirror{mustMirror(t, Spec{Name: "cdn"}, cdn)}, Options{ProbeInterval: 2 * time.Millisecond})
	q := Query{Loc: loc("81.2.69.142", "DE"), Digest: digest(t, 1)}
	if d := s.Choose(t.Context(), q); d.Reason != ReasonNotPresent {
		t.Errorf("reason %q, want %q: a 403 is an absence", d.Reason, ReasonNotPresent)
	}
	runFor(t, s)
	time.Sleep(20 * time.Millisecond)
	if h := healthOf(s, "cdn"); h.Credentials != "" || !h.Healthy || h.Failures != 0 {
		t.Errorf("health %+v", h)
	}
	cdn.mu.Lock()
	defer cdn.mu.Unlock()
	if n := cdn.asked[ProbeKey("blobs/")]; n != 0 {
		t.Errorf("probe key asked about %d times", n)
	}
}
