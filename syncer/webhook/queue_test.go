package webhook

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/oci"
)

// waitFor bounds every wait of these tests: long enough for a loaded CI machine, short enough to
// fail clearly.
const waitFor = 10 * time.Second

// gate is a run function whose calls block until released, recording what ran and how many ran
// at once.
type gate struct {
	mu      sync.Mutex
	started chan Push
	release chan struct{}
	ran     []Push
	now     map[Push]int
	maxNow  int
	maxSame int
}

func newGate() *gate {
	return &gate{started: make(chan Push, 100), release: make(chan struct{}), now: map[Push]int{}}
}

func (g *gate) run(ctx context.Context, p Push) {
	g.mu.Lock()
	g.now[p]++
	g.maxSame = max(g.maxSame, g.now[p])
	total := 0
	for _, n := range g.now {
		total += n
	}
	g.maxNow = max(g.maxNow, total)
	g.mu.Unlock()
	g.started <- p
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.now[p]--
	if g.now[p] == 0 {
		delete(g.now, p)
	}
	g.ran = append(g.ran, p)
	g.mu.Unlock()
}

func (g *gate) wait(t *testing.T) Push {
	t.Helper()
	select {
	case p := <-g.started:
		return p
	case <-time.After(waitFor):
		t.Fatal("no run started")
		return Push{}
	}
}

func (g *gate) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case p := <-g.started:
		t.Fatalf("unexpected run of %v", p)
	case <-time.After(d):
	}
}

func startQueue(t *testing.T, q *Queue) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Fatal("Run did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestQueueDedupesWaiting(t *testing.T) {
	g := newGate()
	q := NewQueue(g.run, 1)
	// Queued before Run: nothing runs yet, so everything waits.
	a, b := pushOf("app", "1.0"), pushOf("app", "2.0")
	q.Add(a)
	q.Add(b)
	q.Add(a)
	q.Add(b)
	if n := q.Pending(); n != 2 {
		t.Fatalf("Pending() = %d, want 2", n)
	}
	startQueue(t, q)
	for range 2 {
		g.wait(t)
		g.release <- struct{}{}
	}
	g.none(t, 100*time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Equal(g.ran, []Push{a, b}) {
		t.Errorf("ran %v, want %v", g.ran, []Push{a, b})
	}
}

// A push announced while the same push runs runs once more afterwards, never alongside.
func TestQueueRerunsPushAnnouncedDuringRun(t *testing.T) {
	g := newGate()
	q := NewQueue(g.run, 4)
	startQueue(t, q)
	a := pushOf("app", "latest")
	q.Add(a)
	g.wait(t)
	q.Add(a)
	q.Add(a) // still one rerun
	g.none(t, 100*time.Millisecond)
	g.release <- struct{}{}
	if p := g.wait(t); p != a {
		t.Fatalf("rerun of %v, want %v", p, a)
	}
	g.release <- struct{}{}
	g.none(t, 100*time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.maxSame != 1 {
		t.Errorf("the same push ran %d times at once", g.maxSame)
	}
	if len(g.ran) != 2 {
		t.Errorf("ran %v, want two runs", g.ran)
	}
}

func TestQueueBoundDropsAndLogs(t *testing.T) {
	var logs bytes.Buffer
	g := newGate()
	q := NewQueue(g.run, 1, QueueLimit(2), QueueLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	var queued []bool
	for _, tag := range []string{"1", "2", "3", "4", "1"} {
		queued = append(queued, q.Add(pushOf("app", tag)))
	}
	// The last is app:1 again: waiting already, so it will run although the queue is full.
	if want := []bool{true, true, false, false, true}; !slices.Equal(queued, want) {
		t.Errorf("Add returned %v, want %v", queued, want)
	}
	if n := q.Pending(); n != 2 {
		t.Fatalf("Pending() = %d, want 2", n)
	}
	if n := q.Dropped(); n != 2 {
		t.Errorf("Dropped() = %d, want 2", n)
	}
	out := logs.String()
	for _, want := range []string{"repository=app ref=3", "repository=app ref=4", "reason=\"queue full\""} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	startQueue(t, q)
	for range 2 {
		g.wait(t)
		g.release <- struct{}{}
	}
	g.none(t, 100*time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	if want := []Push{pushOf("app", "1"), pushOf("app", "2")}; !slices.Equal(g.ran, want) {
		t.Errorf("ran %v, want %v", g.ran, want)
	}
}

func TestQueueAddNeverBlocks(t *testing.T) {
	q := NewQueue(func(context.Context, Push) {}, 1, QueueLimit(1))
	done := make(chan struct{})
	go func() {
		for i := range 10000 {
			q.Add(pushOf("app", strconv.Itoa(i)))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Add blocked on a full queue with no Run")
	}
}

func TestQueueWorkers(t *testing.T) {
	g := newGate()
	q := NewQueue(g.run, 3)
	startQueue(t, q)
	for _, tag := range []string{"1", "2", "3", "4", "5"} {
		q.Add(pushOf("app", tag))
	}
	for range 3 {
		g.wait(t)
	}
	// Three run; the other two wait for a worker.
	g.none(t, 100*time.Millisecond)
	if n := q.Pending(); n != 2 {
		t.Errorf("Pending() = %d, want 2", n)
	}
	for range 2 {
		g.release <- struct{}{}
		g.wait(t)
	}
	for range 3 {
		g.release <- struct{}{}
	}
	g.none(t, 100*time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.maxNow != 3 {
		t.Errorf("at most %d ran at once, want 3", g.maxNow)
	}
	if len(g.ran) != 5 {
		t.Errorf("ran %v, want 5 runs", g.ran)
	}
}

func TestQueueZeroWorkersMeansOne(t *testing.T) {
	g := newGate()
	q := NewQueue(g.run, 0)
	startQueue(t, q)
	q.Add(pushOf("app", "1"))
	q.Add(pushOf("app", "2"))
	g.wait(t)
	g.none(t, 100*time.Millisecond)
	g.release <- struct{}{}
	g.wait(t)
	g.release <- struct{}{}
}

// Run returns once its context ends: the runs in progress see the cancelled context, waiting
// pushes are not started, and no rerun starts.
func TestQueueShutdown(t *testing.T) {
	var logs bytes.Buffer
	g := newGate()
	q := NewQueue(g.run, 1, QueueLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	stop := startQueue(t, q)
	a := pushOf("app", "1")
	q.Add(a)
	g.wait(t)
	q.Add(a) // a rerun that must not happen after shutdown
	q.Add(pushOf("app", "2"))
	stop() // g.run returns on ctx.Done
	g.none(t, 100*time.Millisecond)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Equal(g.ran, []Push{a}) {
		t.Errorf("ran %v, want only %v", g.ran, a)
	}
	if !strings.Contains(logs.String(), "unrun=1") {
		t.Errorf("shutdown log does not count the waiting push:\n%s", logs.String())
	}
}

// Many goroutines adding while workers run: every distinct push runs at least once, the same push
// never twice at once (run with -race).
func TestQueueConcurrentAdds(t *testing.T) {
	var mu sync.Mutex
	ran := map[Push]int{}
	running := map[Push]bool{}
	var overlap bool
	q := NewQueue(func(ctx context.Context, p Push) {
		mu.Lock()
		if running[p] {
			overlap = true
		}
		running[p] = true
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		running[p] = false
		ran[p]++
		mu.Unlock()
	}, 4)
	startQueue(t, q)
	pushes := []Push{pushOf("a", "1"), pushOf("a", "2"), pushOf("b", "1"), pushOf("c", "1"), pushOf("c", "2"), pushOf("d", "latest")}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				q.Add(pushes[(i+j)%len(pushes)])
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(waitFor)
	for {
		mu.Lock()
		done := len(ran) == len(pushes) && q.Pending() == 0 && !slices.Contains(mapValues(running), true)
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every push ran: %v", ran)
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Error("the same push ran twice at once")
	}
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// pushOf is a Push of a tag or digest that the test knows to be valid.
func pushOf(repo, ref string) Push {
	rf, err := oci.ParseReference(ref)
	if err != nil {
		panic(err)
	}
	return Push{Repo: repo, Ref: rf}
}
