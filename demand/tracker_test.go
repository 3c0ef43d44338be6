package demand

import (
	"crypto/sha256"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/oci"
)

func digestOf(t testing.TB, n int) oci.Digest {
	t.Helper()
	d, err := oci.ParseDigest(fmt.Sprintf("sha256:%x", sha256.Sum256(fmt.Append(nil, n))))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

func TestTrackerCountsAndDecays(t *testing.T) {
	var c clock
	c.add(time.Hour)
	tr := NewTracker(TrackerOptions{HalfLife: time.Hour, Clock: c.now})
	a := Key{"asia", "app", digestOf(t, 1)}
	b := Key{"asia", Other, digestOf(t, 2)}
	for range 4 {
		tr.Miss(a)
	}
	tr.Miss(b)
	top := tr.Top(10)
	if len(top) != 2 || top[0].Key != a || top[0].Count != 4 || top[1].Count != 1 {
		t.Fatalf("top = %+v", top)
	}
	c.add(time.Hour)
	top = tr.Top(1)
	if len(top) != 1 || math.Abs(top[0].Count-2) > 1e-9 {
		t.Fatalf("after one half-life: %+v; want a count of 2", top)
	}
	tr.Miss(a)
	if got := tr.Top(1)[0].Count; math.Abs(got-3) > 1e-9 {
		t.Errorf("decayed 2 plus a new miss = %v; want 3", got)
	}
	if got := tr.MirrorTotals(); math.Abs(got["asia"]-3.5) > 1e-9 || len(got) != 1 {
		t.Errorf("MirrorTotals = %v; want asia 3.5", got)
	}
}

// TestTrackerBounded: a flood of distinct digests stays within Size entries and does not push
// out the entry that is missed again and again.
func TestTrackerBounded(t *testing.T) {
	var c clock
	tr := NewTracker(TrackerOptions{Size: 64, Clock: c.now})
	hot := Key{"asia", "app", digestOf(t, -1)}
	for i := range 20000 {
		if i%10 == 0 {
			tr.Miss(hot)
		}
		tr.Miss(Key{"asia", Other, digestOf(t, i)})
		c.add(time.Millisecond)
	}
	all := tr.Top(-1)
	if len(all) > 64+shards {
		t.Errorf("%d entries kept; want at most about 64", len(all))
	}
	if all[0].Key != hot {
		t.Errorf("most missed is %+v; want the hot entry", all[0])
	}
}

func TestTrackerConcurrent(t *testing.T) {
	tr := NewTracker(TrackerOptions{Size: 128})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				tr.Miss(Key{"m", "app", digestOf(t, g*10000+i%300)})
				if i%500 == 0 {
					tr.Top(5)
				}
			}
		})
	}
	wg.Wait()
	if n := len(tr.Top(-1)); n == 0 || n > 128+shards {
		t.Errorf("%d entries", n)
	}
}

// BenchmarkTrackerMiss is the cost a miss adds to a blob request: a known entry (the common
// case: a pull asks for the same few blobs from many clients) and a full tracker taking new ones.
func BenchmarkTrackerMiss(b *testing.B) {
	ds := make([]oci.Digest, 4096)
	for i := range ds {
		ds[i] = digestOf(b, i)
	}
	b.Run("known", func(b *testing.B) {
		tr := NewTracker(TrackerOptions{})
		k := Key{"asia", "app", ds[0]}
		tr.Miss(k)
		b.ReportAllocs()
		for b.Loop() {
			tr.Miss(k)
		}
	})
	b.Run("new-full", func(b *testing.B) {
		tr := NewTracker(TrackerOptions{Size: 256})
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			tr.Miss(Key{"asia", Other, ds[i%len(ds)]})
			i++
		}
	})
	b.Run("known-parallel", func(b *testing.B) {
		tr := NewTracker(TrackerOptions{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				tr.Miss(Key{"asia", "app", ds[i%64]})
				i++
			}
		})
	})
}
