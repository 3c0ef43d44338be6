package webhook

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// eventWait bounds how long a push may take to reach the handler: the registry sends events from
// a queue of its own, at once unless an attempt fails.
const eventWait = 30 * time.Second

// A real distribution registry announces pushes to the webhook as it would in production: the
// token in the endpoint's headers, the envelope in its own media type, blob pushes mixed in. The
// pushes reach the queue's run function under their client names.
func TestWebhookFromRegistry(t *testing.T) {
	const token = "registry-notify-token"
	var (
		mu       sync.Mutex
		statuses = map[string][]int{} // by endpoint
		runs     = make(chan Push, 100)
	)
	q := NewQueue(func(_ context.Context, p Push) { runs <- p }, 2)
	ctx, cancel := context.WithCancel(context.Background())
	queueDone := make(chan struct{})
	go func() { q.Run(ctx); close(queueDone) }()
	t.Cleanup(func() { cancel(); <-queueDone })

	// The table needs the registry's address and the registry needs the webhook's: the handler is
	// built once the registry runs, behind a server that starts first.
	var h http.Handler
	var hmu sync.RWMutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hmu.RLock()
		handler := h
		hmu.RUnlock()
		if handler == nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		handler.ServeHTTP(sw, r)
		mu.Lock()
		statuses[r.URL.Query().Get("from")] = append(statuses[r.URL.Query().Get("from")], sw.status)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)

	reg := testenv.StartRegistry(t, testenv.RegistryOptions{
		Notify: []testenv.NotifyEndpoint{{
			URL:     srv.URL + RegistryPath + "?from=good",
			Headers: map[string][]string{"Authorization": {"Bearer " + token}},
		}, {
			// Refused, so the registry keeps retrying; it must never get through.
			URL:     srv.URL + RegistryPath + "?from=wrong",
			Headers: map[string][]string{"Authorization": {"Bearer " + token + "-old"}},
		}},
	})
	def, err := url.Parse(reg.URL + "/v2/acme/images/")
	if err != nil {
		t.Fatal(err)
	}
	ups, err := upstream.NewTable(def, nil)
	if err != nil {
		t.Fatal(err)
	}
	handler, err := NewHandler(Options{
		Token:    token,
		Upstream: ups,
		Trigger:  q.Trigger,
		Logger:   slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	hmu.Lock()
	h = handler
	hmu.Unlock()

	reg.PushOCIImage(t, "acme/images/app:1.0")
	expect(t, runs, []Push{pushOf("app", "1.0")})

	// An index: the registry announces each image by digest, then the index by its tag.
	idx := reg.PushOCIIndex(t, "acme/images/org/app:latest")
	want := []Push{pushOf("org/app", "latest")}
	for _, c := range idx.Manifests {
		want = append(want, pushOf("org/app", c.Digest))
	}
	expect(t, runs, want)

	// A repository outside the upstream's prefix is nobody's: accepted and dropped.
	reg.PushOCIImage(t, "other/app:1.0")
	reg.Tag(t, "acme/images/app:1.0", "1.1")
	expect(t, runs, []Push{pushOf("app", "1.1")})

	mu.Lock()
	defer mu.Unlock()
	for from, want := range map[string]int{"good": http.StatusAccepted, "wrong": http.StatusUnauthorized} {
		got := statuses[from]
		if len(got) == 0 || slices.ContainsFunc(got, func(s int) bool { return s != want }) {
			t.Errorf("endpoint %q got %v, want only %d", from, got, want)
		}
	}
}

// expect waits for exactly the pushes in want, in any order, and no other push meanwhile.
func expect(t *testing.T, runs <-chan Push, want []Push) {
	t.Helper()
	var got []Push
	deadline := time.After(eventWait)
	for len(got) < len(want) {
		select {
		case p := <-runs:
			// distribution's notifications name the manifest of a tag's push too.
			if !p.Ref.IsDigest() && p.Digest.IsZero() {
				t.Errorf("push %v without the manifest's digest", p)
			}
			p.Digest = oci.Digest{}
			if !slices.Contains(want, p) {
				t.Fatalf("unexpected push %v; waiting for %v", p, want)
			}
			if !slices.Contains(got, p) {
				got = append(got, p)
			}
		case <-deadline:
			t.Fatalf("after %v got pushes %v, want %v", eventWait, got, want)
		}
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// A real distribution registry keeps an event the webhook refused with 503 (the queue was full)
// and sends it again on its own backoff; once a worker has made room, the retry is accepted and
// the push that was refused runs.
func TestWebhookRegistryRetriesWhenQueueFull(t *testing.T) {
	const token = "registry-notify-token"
	var (
		mu       sync.Mutex
		statuses []int
		runs     = make(chan Push, 100)
	)
	// One push fits; the workers start only once the registry has been refused.
	q := NewQueue(func(_ context.Context, p Push) { runs <- p }, 1, QueueLimit(1))
	var h http.Handler
	var hmu sync.RWMutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hmu.RLock()
		handler := h
		hmu.RUnlock()
		if handler == nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		handler.ServeHTTP(sw, r)
		mu.Lock()
		statuses = append(statuses, sw.status)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{
		Notify: []testenv.NotifyEndpoint{{
			URL:     srv.URL + RegistryPath,
			Headers: map[string][]string{"Authorization": {"Bearer " + token}},
			// Pulls would be refused too while the queue is full, and delay the push events
			// queued behind them in the registry.
			IgnoreActions: []string{"pull"},
		}},
	})
	def, err := url.Parse(reg.URL + "/v2/acme/images/")
	if err != nil {
		t.Fatal(err)
	}
	ups, err := upstream.NewTable(def, nil)
	if err != nil {
		t.Fatal(err)
	}
	handler, err := NewHandler(Options{Token: token, Upstream: ups, Trigger: q.Trigger,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	hmu.Lock()
	h = handler
	hmu.Unlock()

	reg.PushOCIImage(t, "acme/images/app:1.0") // queued: the queue is now full
	reg.Tag(t, "acme/images/app:1.0", "1.1")   // refused
	deadline := time.Now().Add(eventWait)
	for q.Dropped() < 2 { // refused, and refused again on the registry's first retry
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %d pushes dropped; want the registry to retry a refused event", eventWait, q.Dropped())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	queueDone := make(chan struct{})
	go func() { q.Run(ctx); close(queueDone) }()
	t.Cleanup(func() { cancel(); <-queueDone })
	expect(t, runs, []Push{pushOf("app", "1.0"), pushOf("app", "1.1")})

	// The retry's push runs as soon as the handler queues it, before its answer is recorded:
	// wait for the answer too.
	retried := func() ([]int, bool) {
		mu.Lock()
		defer mu.Unlock()
		first503 := slices.Index(statuses, http.StatusServiceUnavailable)
		return slices.Clone(statuses), first503 >= 0 && slices.Contains(statuses[first503:], http.StatusAccepted)
	}
	deadline = time.Now().Add(eventWait)
	for {
		got, ok := retried()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses %v, want a 503 and then 202 for the retry", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
