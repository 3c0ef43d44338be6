package syncer

import (
	"slices"
	"sync"
	"time"
)

// Progress follows the copies of every run of the Syncers given it (Options.Progress), for a
// display to read from time to time with Snapshot: it is only counters, updated as bytes move,
// and costs the copies nothing to keep. The zero value is ready; a nil *Progress follows nothing.
type Progress struct {
	mu     sync.Mutex
	blobs  []*blobProgress // copies under way, in the order they started
	queued int             // blobs checked and to be copied, or being checked
	total  int64           // their bytes
	done   int64           // bytes of the blobs finished, or found present
	copied int             // blobs finished
}

// blobProgress is one copy under way.
type blobProgress struct {
	p      *Progress
	digest string
	size   int64
	start  time.Time
	feeds  []*feed
}

// BlobStatus is one copy under way.
type BlobStatus struct {
	Digest  string
	Size    int64
	Done    int64 // bytes taken by the slowest mirror still copying it
	Started time.Time
}

// ProgressSnapshot is what a Progress knows at one moment.
type ProgressSnapshot struct {
	Blobs []BlobStatus // copies under way, oldest first
	// Total and Done are bytes over the blobs planned so far, Done counting the blobs finished
	// (copied, failed or found present) and what the copies under way have moved.
	Total, Done int64
	// Queued and Finished count blobs the same way.
	Queued, Finished int
}

// plan adds blobs of bytes in all to what is to be checked and copied.
func (p *Progress) plan(blobs int, bytes int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queued += blobs
	p.total += bytes
}

// settle counts a blob of size bytes as finished without a copy (present everywhere, failed
// before its transfer, not started).
func (p *Progress) settle(size int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += size
	p.copied++
}

// start records a copy of size bytes under way, fed to feeds; finish ends it.
func (p *Progress) start(digest string, size int64, feeds []*feed) *blobProgress {
	if p == nil {
		return nil
	}
	b := &blobProgress{p: p, digest: digest, size: size, start: time.Now(), feeds: feeds}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blobs = append(p.blobs, b)
	return b
}

// finish removes the copy b from its Progress and counts it as finished; a nil b (no
// Progress) is nothing.
func (b *blobProgress) finish() {
	if b == nil {
		return
	}
	p := b.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blobs = slices.DeleteFunc(p.blobs, func(x *blobProgress) bool { return x == b })
	p.done += b.size
	p.copied++
}

// taken is how far the slowest upload of b that is still running has got.
func (b *blobProgress) taken() int64 {
	lowest := int64(-1)
	for _, f := range b.feeds {
		select {
		case <-f.done:
			continue
		default:
		}
		if t := f.taken.Load(); lowest < 0 || t < lowest {
			lowest = t
		}
	}
	if lowest < 0 {
		return b.size
	}
	return min(lowest, b.size)
}

// Snapshot returns the state of the copies now.
func (p *Progress) Snapshot() ProgressSnapshot {
	if p == nil {
		return ProgressSnapshot{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := ProgressSnapshot{Total: p.total, Done: p.done, Queued: p.queued, Finished: p.copied}
	for _, b := range p.blobs {
		t := b.taken()
		s.Blobs = append(s.Blobs, BlobStatus{Digest: b.digest, Size: b.size, Done: t, Started: b.start})
		s.Done += t
	}
	return s
}
