package syncer

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/upstream"
)

// cutUpstream serves u's registry, except that a GET of the blob with digest cut sends only the
// first half of it. With hangUp, the response announces the whole length and the connection is
// then dropped (the body fails); without, the response is chunked and ends cleanly (the body
// just ends early).
func cutUpstream(t *testing.T, u *upstreamRegistry, cut string, hangUp bool) *upstreamRegistry {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+cut) {
			u.srv.Config.Handler.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		u.srv.Config.Handler.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		if hangUp {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		} else {
			w.Header().Del("Content-Length")
		}
		w.WriteHeader(rec.Code)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		if hangUp {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	return &upstreamRegistry{srv: srv, host: strings.TrimPrefix(srv.URL, "http://")}
}

// An upstream body that ends early or fails leaves nothing under the key on any target, even on
// one that keeps whatever it read, as a digest mismatch does; the other blobs are copied.
func TestAllTruncatedUpstreamBody(t *testing.T) {
	for _, tt := range []struct {
		name   string
		hangUp bool
	}{
		{name: "connection dropped", hangUp: true},
		{name: "body ends early", hangUp: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u := startUpstream(t)
			blobs := u.push(t, "app:1.0", randomImage(t, 2))
			bad := blobs[1]
			s, a, b := setup(t, cutUpstream(t, u, bad, tt.hangUp), []Repository{{Name: "app"}}, Options{})
			rep := runAll(t, s)

			want := sorted(slices.DeleteFunc(slices.Clone(blobs), func(d string) bool { return d == bad }))
			if diff := cmp.Diff(want, a.digests(t, testPrefix)); diff != "" {
				t.Errorf("target a blobs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, b.digests(t, "")); diff != "" {
				t.Errorf("target b blobs (-want +got):\n%s", diff)
			}
			if n := a.puts[testPrefix+"sha256/"+strings.TrimPrefix(bad, "sha256:")]; n != 1 {
				t.Errorf("the cut blob was written %d times, want once", n)
			}
			for _, tr := range rep.Targets[:2] {
				if len(tr.Failed) != 1 || tr.Failed[0].Digest != bad || !strings.Contains(tr.Failed[0].Reason, "fetch from upstream") {
					t.Errorf("target %s failures = %+v, want one for %s, from the upstream", tr.Name, tr.Failed, bad)
				}
				if tr.Copied != len(blobs)-1 {
					t.Errorf("target %s copied %d, want %d", tr.Name, tr.Copied, len(blobs)-1)
				}
			}
		})
	}
}

// racingStore is a fakeStore on which, while a Put fails, another run stores the whole blob
// under the same key, as a webhook's copy running beside a scheduled one does.
type racingStore struct {
	*fakeStore
	whole map[string][]byte // by key
}

func (r *racingStore) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	err := r.fakeStore.Put(ctx, key, body, size)
	if err != nil {
		r.mu.Lock()
		r.objects[key] = r.whole[key]
		r.mu.Unlock()
	}
	return err
}

// After a cut body, an object of the blob's full size did not come from the failed transfer and
// is kept: deleting it would undo another run's good copy.
func TestTruncatedUpstreamKeepsAnotherRunsCopy(t *testing.T) {
	u := startUpstream(t)
	blobs := u.push(t, "app:1.0", randomImage(t, 1))
	bad := blobs[1]
	key := testPrefix + "sha256/" + strings.TrimPrefix(bad, "sha256:")
	base, err := url.Parse(cutUpstream(t, u, bad, true).srv.URL + "/v2/acme/")
	if err != nil {
		t.Fatal(err)
	}
	ups, err := upstream.NewTable(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &racingStore{fakeStore: newFakeStore(), whole: map[string][]byte{key: blobFor(t, u, "app", bad)}}
	s := New(Plan{Repositories: []Repository{{Name: "app"}}}, ups, []Target{{Name: "a", Prefix: testPrefix, Writer: r}}, Options{})
	rep := runAll(t, s)
	if got := r.digests(t, testPrefix); !slices.Contains(got, bad) {
		t.Errorf("blobs %v: the other run's copy of %s was deleted", got, bad)
	}
	if f := rep.Targets[0].Failed; len(f) != 1 || f[0].Digest != bad {
		t.Errorf("failures = %+v, want the cut transfer of %s", f, bad)
	}
}
