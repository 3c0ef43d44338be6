package syncer

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/mirrors"
)

// timedStore is a fakeStore that records when each Put of a blob returned.
type timedStore struct {
	*fakeStore
	mu   sync.Mutex
	done map[string]time.Time
}

func (s *timedStore) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	err := s.fakeStore.Put(ctx, key, body, size)
	s.mu.Lock()
	s.done[key] = time.Now()
	s.mu.Unlock()
	return err
}

func (s *timedStore) doneAt(key string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done[key]
}

// detachSetup pushes an image of one layer of layerSize bytes, and returns a syncer copying it
// into a (first) and a timedStore b, the upstream and the layer's digest.
func detachSetup(t *testing.T, layerSize int64, a mirrors.Writer, opts Options) (*Syncer, *timedStore, *upstreamRegistry, string) {
	t.Helper()
	u := startUpstream(t)
	img := testenv.OCIImage(t, 1, layerSize, "linux/amd64")
	blobs := u.push(t, "app:1.0", img)
	b := &timedStore{fakeStore: newFakeStore(), done: map[string]time.Time{}}
	targets := []Target{{Name: "a", Prefix: testPrefix, Writer: a}, {Name: "b", Writer: b}}
	layer := testenv.Describe(t, img).Layers[0]
	if !slices.Contains(blobs, layer) {
		t.Fatalf("layer %s not among the blobs %v", layer, blobs)
	}
	return newSyncer(t, u, targets, opts), b, u, layer
}

// A mirror that hangs half way through a large blob holds the other back for Detach, not until
// its own watchdog gives up on it: the other has the blob long before Stall has passed, and
// only the hung mirror fails.
func TestHungMirrorDoesNotHoldOthersBack(t *testing.T) {
	a := &pacedWriter{fakeStore: newFakeStore(), chunk: 64 << 10, every: time.Millisecond, hangAfter: 1 << 20}
	const stall = 3 * time.Second
	s, b, _, layer := detachSetup(t, 8<<20, a, Options{Stall: stall, Detach: 200 * time.Millisecond})
	start := time.Now()
	rep := runAll(t, s)
	took := b.doneAt(strings.Replace(layer, "sha256:", "sha256/", 1)).Sub(start)
	if took <= 0 || took >= stall {
		t.Errorf("mirror b had the layer %v after the start, want well within the stall time %v", took, stall)
	}
	if f := rep.Targets[1].Failed; len(f) != 0 {
		t.Errorf("mirror b failures: %+v", f)
	}
	if f := rep.Targets[0].Failed; len(f) != 1 || f[0].Digest != layer || !strings.Contains(f[0].Reason, "mirror a: stalled") {
		t.Errorf("mirror a failures = %+v, want the layer, as stalled", f)
	}
	b.digests(t, "")
}

// A mirror much slower than the other is detached: it reads the blob again from the upstream
// and stores it whole and right, while the other finishes at its own pace.
func TestSlowMirrorDetached(t *testing.T) {
	a := &pacedWriter{fakeStore: newFakeStore(), chunk: 64 << 10, every: 20 * time.Millisecond}
	s, b, u, layer := detachSetup(t, 6<<20, a, Options{Stall: 10 * time.Second, Detach: 100 * time.Millisecond})
	start := time.Now()
	rep := runAll(t, s)
	if rep.Failures() != 0 {
		t.Fatalf("failures: %+v", rep.Targets)
	}
	key := strings.Replace(layer, "sha256:", "sha256/", 1)
	if fast, all := b.doneAt(key).Sub(start), time.Since(start); fast > all/2 {
		t.Errorf("mirror b had the layer after %v of %v: held back by the slow mirror", fast, all)
	}
	if n := u.getCount(layer); n != 2 {
		t.Errorf("the layer was read from the upstream %d times, want twice (once for the detached mirror)", n)
	}
	a.digests(t, testPrefix)
	b.digests(t, "")
	if got := len(a.digests(t, testPrefix)); got != 2 {
		t.Errorf("mirror a holds %d blobs, want 2", got)
	}
}

// The detached mirror's own read is checked against the digest like the shared one: wrong
// bytes on the second read fail that mirror alone and leave nothing under its key.
func TestDetachedMirrorChecksItsOwnRead(t *testing.T) {
	// Detached after about 2.5 MiB, before the byte the second read changes (its middle).
	a := &pacedWriter{fakeStore: newFakeStore(), chunk: 64 << 10, every: 10 * time.Millisecond}
	s, b, u, layer := detachSetup(t, 12<<20, a, Options{Stall: 10 * time.Second, Detach: 100 * time.Millisecond})
	u.mu.Lock()
	u.corruptAfter[layer] = 1
	u.mu.Unlock()
	rep := runAll(t, s)
	if f := rep.Targets[0].Failed; len(f) != 1 || f[0].Digest != layer || !strings.Contains(f[0].Reason, "does not match the digest") {
		t.Errorf("mirror a failures = %+v, want the layer, as a mismatch", f)
	}
	if f := rep.Targets[1].Failed; len(f) != 0 {
		t.Errorf("mirror b failures: %+v", f)
	}
	if got := len(a.digests(t, testPrefix)); got != 1 {
		t.Errorf("mirror a holds %d blobs, want only the config", got)
	}
	if got := len(b.digests(t, "")); got != 2 {
		t.Errorf("mirror b holds %d blobs, want 2", got)
	}
}

// flakyStore is a fakeStore whose first Put of each blob fails half way, as a mirror that
// drops a connection does.
type flakyStore struct {
	*fakeStore
	mu     sync.Mutex
	failed map[string]bool
}

func (s *flakyStore) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	s.mu.Lock()
	first := !s.failed[key] && !isProbe(key)
	s.failed[key] = true
	s.mu.Unlock()
	if first {
		_, _ = io.CopyN(io.Discard, body, size/2)
		return errors.New("connection reset by peer")
	}
	return s.fakeStore.Put(ctx, key, body, size)
}

// A mirror that fails an upload (not the blob) is tried once more, from a download of its own,
// and gets the blob; the other mirror is not held back by that.
func TestFailedUploadTriedAgain(t *testing.T) {
	a := &flakyStore{fakeStore: newFakeStore(), failed: map[string]bool{}}
	s, b, u, layer := detachSetup(t, 4<<20, a, Options{})
	rep := runAll(t, s)
	if rep.Failures() != 0 {
		t.Fatalf("failures: %+v", rep.Targets)
	}
	if got := len(a.digests(t, testPrefix)); got != 2 {
		t.Errorf("mirror a holds %d blobs, want 2", got)
	}
	if got := len(b.digests(t, "")); got != 2 {
		t.Errorf("mirror b holds %d blobs, want 2", got)
	}
	if n := u.getCount(layer); n != 2 {
		t.Errorf("the layer was read from the upstream %d times, want twice (once for the second try)", n)
	}
}

// A mirror that fails an upload on the blob's bytes (the upstream sent others) is not tried
// again.
func TestMismatchNotTriedAgain(t *testing.T) {
	s, _, u, layer := detachSetup(t, 1<<20, newFakeStore(), Options{})
	u.mu.Lock()
	u.corrupt[layer] = true
	u.mu.Unlock()
	rep := runAll(t, s)
	for _, tr := range rep.Targets[:2] {
		if len(tr.Failed) != 1 || !strings.Contains(tr.Failed[0].Reason, "does not match the digest") {
			t.Errorf("mirror %s failures = %+v, want the layer, as a mismatch", tr.Name, tr.Failed)
		}
	}
	if n := u.getCount(layer); n != 1 {
		t.Errorf("the layer was read from the upstream %d times, want once", n)
	}
}
