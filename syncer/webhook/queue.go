package webhook

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
)

// DefaultQueueLimit is how many pushes a Queue holds waiting when QueueLimit is not given. A
// registry announces one push per manifest; a burst of releases stays far below it.
const DefaultQueueLimit = 1024

// Queue runs pushes in the background with a fixed number of workers, so that a webhook can
// answer at once. A push already waiting is not queued twice; a push announced while the same
// push runs is run once more afterwards (the run may have read the registry before the new
// content was there), never twice at the same time. When Limit pushes are waiting, further ones
// are refused: Add says so, the webhook answers 503 so that the sender retries the event later,
// and Dropped counts them.
type Queue struct {
	run     func(context.Context, Push)
	workers int
	log     *slog.Logger

	ch      chan Push // waiting pushes; its capacity is the limit
	dropped atomic.Uint64

	mu    sync.Mutex
	state map[Push]pushState
}

type pushState uint8

const (
	waiting      pushState = iota + 1 // in ch, not started
	running                           // a worker runs it
	runningAgain                      // a worker runs it and runs it again when done
)

// QueueOption tunes NewQueue.
type QueueOption func(*Queue)

// QueueLimit sets how many pushes may wait; n <= 0 means DefaultQueueLimit.
func QueueLimit(n int) QueueOption {
	return func(q *Queue) {
		if n > 0 {
			q.ch = make(chan Push, n)
		}
	}
}

// QueueLogger sets where dropped pushes are reported; nil discards.
func QueueLogger(l *slog.Logger) QueueOption {
	return func(q *Queue) {
		if l != nil {
			q.log = l
		}
	}
}

// NewQueue returns a queue that calls run for each push with up to workers (at least 1) running
// at a time, once Run has started. run gets Run's context and should return soon after it ends.
func NewQueue(run func(ctx context.Context, p Push), workers int, opts ...QueueOption) *Queue {
	q := &Queue{
		run:     run,
		workers: max(workers, 1),
		log:     slog.New(slog.DiscardHandler),
		state:   make(map[Push]pushState),
	}
	for _, o := range opts {
		o(q)
	}
	if q.ch == nil {
		q.ch = make(chan Push, DefaultQueueLimit)
	}
	return q
}

// Add queues p unless it is already waiting, and reports whether p will run: true when it was
// queued, was waiting already, or runs now and is marked to run again. It never blocks: when the
// queue is full, p is dropped, logged and counted (Dropped), and Add returns false.
func (q *Queue) Add(p Push) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch q.state[p] {
	case waiting, runningAgain:
		return true
	case running:
		q.state[p] = runningAgain
		return true
	}
	select {
	case q.ch <- p:
		q.state[p] = waiting
		return true
	default:
		q.dropped.Add(1)
		q.log.Warn("sync queue full: push dropped", "repository", p.Repo, "ref", p.Ref.String(), "reason", "queue full", "limit", cap(q.ch))
		return false
	}
}

// Trigger adds p to the queue; it has the signature of Options.Trigger.
func (q *Queue) Trigger(_ context.Context, p Push) bool { return q.Add(p) }

// Dropped returns how many times Add has refused a push since the queue was made, for a counter
// metric (oci_proxy_sync_pushes_dropped_total): a push refused on two attempts of the sender
// and queued on the third counts twice.
func (q *Queue) Dropped() uint64 { return q.dropped.Load() }

// Pending returns how many pushes are waiting (not running).
func (q *Queue) Pending() int { return len(q.ch) }

// Run processes pushes until ctx ends, then waits for the runs in progress to return. Pushes
// still waiting are left unrun. Call it once.
func (q *Queue) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range q.workers {
		wg.Go(func() { q.work(ctx) })
	}
	wg.Wait()
	if n := len(q.ch); n > 0 {
		q.log.Info("sync queue stopped", "reason", "shutdown", "unrun", n)
	}
}

func (q *Queue) work(ctx context.Context) {
	for {
		// Checked first so that a cancelled ctx wins over a full queue.
		if ctx.Err() != nil {
			return
		}
		var p Push
		select {
		case <-ctx.Done():
			return
		case p = <-q.ch:
		}
		q.mu.Lock()
		q.state[p] = running
		q.mu.Unlock()
		for {
			q.run(ctx, p)
			q.mu.Lock()
			again := q.state[p] == runningAgain && ctx.Err() == nil
			if again {
				q.state[p] = running
			} else {
				delete(q.state, p)
			}
			q.mu.Unlock()
			if !again {
				break
			}
		}
	}
}
