package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptrace"
	"sync/atomic"
	"time"
)

// DefaultStall is how long a copy may go without moving a byte before it fails, when
// Options.Stall is zero. It is measured per mirror and for the upstream read, only while each
// one is expected to move: a mirror waiting for bytes from the upstream, or a request waiting
// for a connection, is not stalled. A minute covers a service's pause to assemble a large object
// (S3's CompleteMultipartUpload, a GCS upload's last chunk) and one GCS chunk at a few hundred
// KB/s (see mirrors/gcs.UploadOptions.Progress), and still ends a dead connection long before
// anyone would give up on a copy by hand.
const DefaultStall = time.Minute

// errStalled is the cause of a copy ended by its watchdog.
var errStalled = errors.New("stalled")

// liveness is when one side of a copy (the upstream read, or one mirror's upload) last moved a
// byte, and whether it is waiting for something that is not its fault, which is not charged.
type liveness struct {
	last atomic.Int64 // UnixNano of the last progress
	wait atomic.Int32 // > 0: waiting for input, a connection or a slot
}

func newLiveness(now time.Time) *liveness {
	l := &liveness{}
	l.last.Store(now.UnixNano())
	return l
}

// touch records progress.
func (l *liveness) touch() { l.last.Store(time.Now().UnixNano()) }

// pause stops the clock until the returned function is called, which restarts it: the wait
// ends as if a byte had just moved.
func (l *liveness) pause() (resume func()) {
	l.wait.Add(1)
	return func() {
		l.touch()
		l.wait.Add(-1)
	}
}

// stop stops the clock for good: the side is done.
func (l *liveness) stop() { l.wait.Add(1) }

// idle is how long l has been charged without progress at now; zero while it waits.
func (l *liveness) idle(now time.Time) time.Duration {
	if l.wait.Load() > 0 {
		return 0
	}
	return now.Sub(time.Unix(0, l.last.Load()))
}

// watch calls stop(err) for each side that has been idle for limit, once, until ctx ends. The
// sides are checked a few times per limit, so a stall is noticed within limit + limit/4.
func watch(ctx context.Context, limit time.Duration, sides []*liveness, stop []func(error), names []string) {
	tick := time.NewTicker(max(limit/4, time.Millisecond))
	defer tick.Stop()
	fired := make([]bool, len(sides))
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for i, l := range sides {
				if !fired[i] && l.idle(now) >= limit {
					fired[i] = true
					stop[i](fmt.Errorf("%s: %w: no bytes moved for %v", names[i], errStalled, limit))
				}
			}
		}
	}
}

// connWait pauses l while a request made with the returned context waits for a connection: the
// pool of the upstream client may be busy with other copies, which is not this copy's stall. The
// dial itself has the transport's own timeout.
func connWait(ctx context.Context, l *liveness) context.Context {
	var resume atomic.Pointer[func()]
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) {
			r := l.pause()
			if old := resume.Swap(&r); old != nil {
				(*old)()
			}
		},
		GotConn: func(httptrace.GotConnInfo) {
			if r := resume.Swap(nil); r != nil {
				(*r)()
			}
		},
		GotFirstResponseByte: l.touch,
	})
}
