package syncer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// newSyncer is setup with targets of the test's choosing.
func newSyncer(t *testing.T, u *upstreamRegistry, targets []Target, opts Options) *Syncer {
	t.Helper()
	base, err := url.Parse(u.srv.URL + "/v2/acme/")
	if err != nil {
		t.Fatal(err)
	}
	ups, err := upstream.NewTable(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	return New(Plan{Repositories: []Repository{{Name: "app"}}}, ups, targets, opts)
}

// TestRunWritesProbe checks that every kind of run writes the probe object into every target
// before it is done, and a dry run into none.
func TestRunWritesProbe(t *testing.T) {
	u := startUpstream(t)
	u.push(t, "app:1.0", randomImage(t, 1))
	tests := []struct {
		name string
		opts Options
		run  func(ctx context.Context, s *Syncer) (Report, error)
		want bool
	}{
		{"All", Options{}, func(ctx context.Context, s *Syncer) (Report, error) { return s.All(ctx) }, true},
		{"Ref", Options{}, func(ctx context.Context, s *Syncer) (Report, error) {
			return s.Ref(ctx, "app", mustRef(t, "1.0"))
		}, true},
		{"Ref of a repository not configured", Options{}, func(ctx context.Context, s *Syncer) (Report, error) {
			return s.Ref(ctx, "other", mustRef(t, "1.0"))
		}, true},
		{"dry run", Options{DryRun: true}, func(ctx context.Context, s *Syncer) (Report, error) { return s.All(ctx) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, a, b := setup(t, u, []Repository{{Name: "app"}}, tt.opts)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := tt.run(ctx, s)
			if err != nil || rep.Failures() != 0 {
				t.Fatalf("run: %v, %d failures", err, rep.Failures())
			}
			for _, tc := range []struct {
				store  *fakeStore
				prefix string
			}{{a, testPrefix}, {b, ""}} {
				tc.store.mu.Lock()
				got, ok := tc.store.objects[mirrors.ProbeKey(tc.prefix)]
				tc.store.mu.Unlock()
				if ok != tt.want || (ok && string(got) != mirrors.ProbeContent) {
					t.Errorf("probe under %q: %q (stored %v), want stored %v", mirrors.ProbeKey(tc.prefix), got, ok, tt.want)
				}
			}
		})
	}
}

func mustRef(t *testing.T, s string) oci.Reference {
	t.Helper()
	r, err := oci.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// probeRefused refuses to store the probe object, as a policy that lets sync write only blobs
// would.
type probeRefused struct{ *fakeStore }

func (p probeRefused) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	if isProbe(key) {
		return fmt.Errorf("put %s: %w", key, mirrors.ErrDenied)
	}
	return p.fakeStore.Put(ctx, key, body, size)
}

// unlisted answers 403 for a key it does not hold, as S3 does to a writer that may not list the
// bucket.
type unlisted struct{ *fakeStore }

func (u unlisted) Stat(ctx context.Context, key string) (mirrors.Object, error) {
	o, err := u.fakeStore.Stat(ctx, key)
	if err == nil && !o.Exists {
		return mirrors.Object{}, fmt.Errorf("stat %s: %w", key, mirrors.ErrDenied)
	}
	return o, err
}

// TestProbeRefused: a target that refuses the probe object gets its blobs all the same, and the
// refusal is a warning, not a failure of the run.
func TestProbeRefused(t *testing.T) {
	u := startUpstream(t)
	blobs := u.push(t, "app:1.0", randomImage(t, 2))
	store := newFakeStore()
	var logs bytes.Buffer
	s := newSyncer(t, u, []Target{{Name: "a", Prefix: testPrefix, Writer: probeRefused{store}}},
		Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	rep := runAll(t, s)
	if rep.Failures() != 0 || rep.Targets[0].Copied != len(blobs) {
		t.Errorf("report %+v, want every blob copied and no failure", rep)
	}
	if !strings.Contains(logs.String(), "probe object not written") || !strings.Contains(logs.String(), "access denied") {
		t.Errorf("no warning about the probe object:\n%s", logs.String())
	}
}

// TestStatDeniedIsWritten: a 403 for a blob is what a writer that may not list the bucket is told
// of a missing one, so it is copied.
func TestStatDeniedIsWritten(t *testing.T) {
	u := startUpstream(t)
	blobs := u.push(t, "app:1.0", randomImage(t, 2))
	store := newFakeStore()
	s := newSyncer(t, u, []Target{{Name: "a", Prefix: testPrefix, Writer: unlisted{store}}}, Options{})
	rep := runAll(t, s)
	if rep.Failures() != 0 || rep.Targets[0].Copied != len(blobs) || len(store.digests(t, testPrefix)) != len(blobs) {
		t.Errorf("report %+v, want %d blobs copied", rep, len(blobs))
	}
	// The second run finds them.
	rep = runAll(t, s)
	if rep.Targets[0].Present != len(blobs) {
		t.Errorf("second run: %+v", rep.Targets[0])
	}
}
