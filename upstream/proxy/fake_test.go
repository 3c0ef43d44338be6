package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/oci"
)

// fakeAnswer is one canned upstream answer.
type fakeAnswer struct {
	status  int
	header  map[string]string
	body    string
	chunked bool // send no Content-Length: the body's size is known only at its end
	content bool // serve body with http.ServeContent (ranges, HEAD) as a storage service would
	// handle, when set, answers instead of the fields above.
	handle http.HandlerFunc
}

// fakeUpstream is a registry of canned answers keyed by "METHOD /path?query". A HEAD with no
// answer of its own gets the GET's answer without a body. It counts every request and keeps the
// headers the proxy must forward.
type fakeUpstream struct {
	srv *httptest.Server

	mu      sync.Mutex
	answers map[string]fakeAnswer
	calls   map[string]int
	auth    []string // Authorization of each request, in order
	accept  []string // Accept of each request
	ranges  []string // Range of each request
	gate    chan struct{}
}

func newFakeUpstream(t testing.TB, answers map[string]fakeAnswer) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{answers: answers, calls: make(map[string]int)}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

// base is the upstream's /v2/ URL of repository acme/app.
func (u *fakeUpstream) base() string { return u.srv.URL + "/v2/acme/app/" }

// set replaces the answer for key.
func (u *fakeUpstream) set(key string, a fakeAnswer) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.answers[key] = a
}

// hold makes every request wait until the returned function is called.
func (u *fakeUpstream) hold() (release func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	g := make(chan struct{})
	u.gate = g
	return sync.OnceFunc(func() { close(g) })
}

// count returns how many requests key got.
func (u *fakeUpstream) count(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[key]
}

func (u *fakeUpstream) callsCopy() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[string]int, len(u.calls))
	for k, v := range u.calls {
		m[k] = v
	}
	return m
}

func (u *fakeUpstream) seen() (auth, accept, ranges []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auth...), append([]string(nil), u.accept...), append([]string(nil), u.ranges...)
}

func (u *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + r.URL.RequestURI()
	u.mu.Lock()
	u.calls[key]++
	u.auth = append(u.auth, r.Header.Get("Authorization"))
	u.accept = append(u.accept, strings.Join(r.Header.Values("Accept"), ", "))
	u.ranges = append(u.ranges, r.Header.Get("Range"))
	a, ok := u.answers[key]
	if !ok && r.Method == http.MethodHead {
		a, ok = u.answers["GET "+r.URL.RequestURI()]
	}
	gate := u.gate
	u.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errors":[{"code":"NAME_UNKNOWN","message":"no such route in the fake"}]}`))
		return
	}
	if a.handle != nil {
		a.handle(w, r)
		return
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	if a.content {
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(a.body))
		return
	}
	if !a.chunked && w.Header().Get("Content-Length") == "" {
		w.Header().Set("Content-Length", strconv.Itoa(len(a.body)))
	}
	status := a.status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if a.chunked {
		w.(http.Flusher).Flush()
	}
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(a.body))
	}
}

// fakeClock is an injectable clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the log records with message msg.
func (l *logBuffer) lines(t testing.TB, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// countingObserver records what the proxy reports.
type countingObserver struct {
	mu    sync.Mutex
	cache map[string]int // "kind/state"
	bytes []int64
}

func (o *countingObserver) Cache(k Kind, s CacheState) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cache == nil {
		o.cache = make(map[string]int)
	}
	o.cache[k.String()+"/"+s.String()]++
}

func (o *countingObserver) BlobBytes(n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.bytes = append(o.bytes, n)
}

// reply is what a test compares of an answer: status, the headers named in replyHeaders that are
// present, and the body.
type reply struct {
	Status int
	Header map[string]string
	Body   string
}

var replyHeaders = []string{
	"Content-Type", "Content-Length", "Docker-Content-Digest", "Etag", "X-Cache",
	"Www-Authenticate", "Retry-After", "Ratelimit-Limit", "Ratelimit-Remaining",
	"Docker-Ratelimit-Source", "Link", "Location", "Content-Range", "Accept-Ranges",
	"Oci-Filters-Applied",
}

func replyOf(rec *httptest.ResponseRecorder) reply {
	h := make(map[string]string)
	for _, k := range replyHeaders {
		if v := rec.Result().Header.Values(k); len(v) > 0 {
			h[k] = strings.Join(v, ", ")
		}
	}
	return reply{Status: rec.Code, Header: h, Body: rec.Body.String()}
}

// serve runs q through p as a client request would.
func serve(p *Proxy, q Request) *httptest.ResponseRecorder {
	r := httptest.NewRequest(q.Method, "http://images.example/v2/", nil)
	rec := httptest.NewRecorder()
	p.Serve(rec, r, q)
	return rec
}

// ociError renders the error body the proxy writes.
func ociErrorBody(code, msg string) string {
	return `{"errors":[{"code":"` + code + `","message":"` + msg + `"}]}` + "\n"
}

func sha256Digest(s string) oci.Digest {
	sum := sha256.Sum256([]byte(s))
	d, err := oci.ParseDigest("sha256:" + hex.EncodeToString(sum[:]))
	if err != nil {
		panic(err)
	}
	return d
}

const (
	manifestType = "application/vnd.oci.image.manifest.v1+json"
	manifestBody = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,` +
		`"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}`
	otherBody = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
)
