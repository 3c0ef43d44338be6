package app

import (
	"context"
	"testing"
	"time"
)

// A stop lets work in flight finish on a context that is not cancelled, and starts nothing new.
func TestLifecycleStopWaitsForWorkInFlight(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	l := newLifecycle(parent)
	started, finished := make(chan struct{}), make(chan error, 1)
	l.Go(func(work context.Context) {
		close(started)
		<-l.stopping.Done() // the stop arrives mid-copy
		select {
		case <-work.Done():
			finished <- work.Err()
		case <-time.After(50 * time.Millisecond):
			finished <- nil // the copy completed
		}
	})
	<-started
	stop()
	if !l.Stop(10 * time.Second) {
		t.Fatal("Stop gave up on work that finishes in 50ms")
	}
	if err := <-finished; err != nil {
		t.Fatalf("work was cut off: %v", err)
	}
	if l.work.Err() == nil {
		t.Error("the work context outlives Stop")
	}
}

// Work that does not finish within the timeout is cancelled, and Stop still waits for it to return.
func TestLifecycleStopCutsOffAfterTimeout(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	l := newLifecycle(parent)
	returned := make(chan struct{})
	l.Go(func(work context.Context) {
		<-work.Done() // a copy that would take forever
		close(returned)
	})
	stop()
	start := time.Now()
	if l.Stop(100 * time.Millisecond) {
		t.Fatal("Stop reported a clean finish for work it had to cancel")
	}
	select {
	case <-returned:
	default:
		t.Fatal("Stop returned before the cancelled work did")
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("Stop cut off after %v, before its timeout", waited)
	}
}
