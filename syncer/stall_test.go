package syncer

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// pacedWriter is a fakeStore whose Put reads every chunk bytes with a pause of every between
// them, then (hang) stops reading for good until its context ends.
type pacedWriter struct {
	*fakeStore
	chunk int
	every time.Duration
	hang  bool
	// hangAfter, when set, hangs once that many bytes of a blob of more than that were read.
	hangAfter int

	mu    sync.Mutex
	order []int64 // sizes of the blobs put, in order
}

func (p *pacedWriter) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	if isProbe(key) {
		return p.fakeStore.Put(ctx, key, body, size)
	}
	p.mu.Lock()
	p.order = append(p.order, size)
	p.mu.Unlock()
	pr, pw := io.Pipe()
	go func() {
		buf := make([]byte, p.chunk)
		read := 0
		for {
			if p.hang || (p.hangAfter > 0 && int64(p.hangAfter) < size && read >= p.hangAfter) {
				<-ctx.Done()
				pw.CloseWithError(context.Cause(ctx))
				return
			}
			n, err := io.ReadFull(body, buf)
			read += n
			pw.Write(buf[:n])
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			select {
			case <-time.After(p.every):
			case <-ctx.Done():
				pw.CloseWithError(context.Cause(ctx))
				return
			}
		}
	}()
	return p.fakeStore.Put(ctx, key, pr, size)
}

func stallSetup(t *testing.T, layers int, layerSize int64, a *pacedWriter, opts Options) (*Syncer, *fakeStore, []string) {
	t.Helper()
	u := startUpstream(t)
	blobs := u.push(t, "app:1.0", testenv.OCIImage(t, layers, layerSize, "linux/amd64"))
	b := newFakeStore()
	targets := []Target{{Name: "a", Prefix: testPrefix, Writer: a}, {Name: "b", Writer: b}}
	return newSyncer(t, u, targets, opts), b, blobs
}

// A mirror that stops taking bytes fails as stalled once Stall has passed; the other mirror
// gets every blob.
func TestStalledMirrorFailsAlone(t *testing.T) {
	a := &pacedWriter{fakeStore: newFakeStore(), chunk: 1 << 10, every: time.Millisecond, hang: true}
	s, b, blobs := stallSetup(t, 2, 64<<10, a, Options{Stall: 300 * time.Millisecond})
	rep := runAll(t, s)
	if diff := sorted(blobs); !slices.Equal(diff, b.digests(t, "")) {
		t.Errorf("mirror b holds %v, want %v", b.digests(t, ""), diff)
	}
	if f := rep.Targets[0].Failed; len(f) != len(blobs) || !strings.Contains(f[0].Reason, "mirror a: stalled") {
		t.Errorf("mirror a failures = %+v, want every blob, as stalled", f)
	}
}

// A mirror that is slow but keeps taking bytes is not stalled, however long its copy takes;
// and the small blobs are copied first.
func TestSlowMirrorIsNotStalled(t *testing.T) {
	a := &pacedWriter{fakeStore: newFakeStore(), chunk: 32 << 10, every: 40 * time.Millisecond}
	s, b, blobs := stallSetup(t, 3, 256<<10, a, Options{Stall: 300 * time.Millisecond, Concurrency: 1})
	start := time.Now()
	rep := runAll(t, s)
	if rep.Failures() != 0 {
		t.Fatalf("failures: %+v", rep.Targets)
	}
	if took := time.Since(start); took < 3*s.opts.Stall {
		t.Errorf("the slow copy took %v; the test needs one longer than a few stall times", took)
	}
	want := sorted(blobs)
	if got := a.digests(t, testPrefix); !slices.Equal(got, want) {
		t.Errorf("mirror a holds %v, want %v", got, want)
	}
	if got := b.digests(t, ""); !slices.Equal(got, want) {
		t.Errorf("mirror b holds %v, want %v", got, want)
	}
	if !slices.IsSorted(a.order) {
		t.Errorf("blobs put in the order of sizes %v, want smallest first", a.order)
	}
	if rep.Targets[0].Seconds <= 0 {
		t.Errorf("mirror a seconds = %v", rep.Targets[0].Seconds)
	}
}

// Progress sees the copies and ends at the bytes planned.
func TestProgress(t *testing.T) {
	a := &pacedWriter{fakeStore: newFakeStore(), chunk: 32 << 10, every: 20 * time.Millisecond}
	p := &Progress{}
	s, _, _ := stallSetup(t, 1, 256<<10, a, Options{Progress: p})
	seen := make(chan ProgressSnapshot, 1)
	go func() {
		for {
			if sn := p.Snapshot(); len(sn.Blobs) > 0 && sn.Blobs[0].Done > 0 {
				seen <- sn
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	runAll(t, s)
	select {
	case sn := <-seen:
		if sn.Total == 0 || sn.Done > sn.Total {
			t.Errorf("snapshot under way: %+v", sn)
		}
	case <-time.After(time.Second):
		t.Error("no snapshot showed a copy under way")
	}
	end := p.Snapshot()
	if end.Done != end.Total || end.Finished != end.Queued || len(end.Blobs) != 0 {
		t.Errorf("snapshot after the run: %+v, want everything done", end)
	}
}
