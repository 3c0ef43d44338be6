package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/demand"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/syncer"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// memWriter is a mirror in memory.
type memWriter struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func (m *memWriter) Stat(_ context.Context, key string) (mirrors.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[key]
	return mirrors.Object{Exists: ok, Size: int64(len(b))}, nil
}

func (m *memWriter) URL(context.Context, string, string, time.Duration) (*url.URL, time.Time, error) {
	return nil, time.Time{}, nil
}

func (m *memWriter) Put(_ context.Context, key string, body io.Reader, _ int64) error {
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[key] = b
	return nil
}

func (m *memWriter) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	return nil
}

func (m *memWriter) blobs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k := range m.objs {
		if strings.Contains(k, "/sha256/") {
			n++
		}
	}
	return n
}

type fixedSource struct {
	d   demand.Data
	err error
}

func (f fixedSource) Fetch(context.Context, time.Duration) (demand.Data, error) { return f.d, f.err }
func (f fixedSource) String() string                                            { return "fixed" }

// testDemandSync is a demandSync over an in-memory registry holding acme/app:1.0 and
// acme/tools:1.0 (two layers each) and two in-memory demand mirrors, asia and sa, reading src.
func testDemandSync(t *testing.T, src demand.Source) (*demandSync, *memWriter, *memWriter) {
	t.Helper()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	for _, repo := range []string{"app", "tools"} {
		img, err := random.Image(512, 2)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(host+"/acme/"+repo+":1.0", name.Insecure)
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	base, _ := url.Parse(reg.URL + "/v2/acme/")
	ups, err := upstream.NewTable(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	asia, sa := &memWriter{objs: map[string][]byte{}}, &memWriter{objs: map[string][]byte{}}
	d := &demandSync{
		sources: []demand.Source{src}, min: 2, window: time.Hour,
		mirrors: []string{"asia", "sa"},
		targets: map[string]syncer.Target{"asia": {Name: "asia", Prefix: "blobs/", Writer: asia}, "sa": {Name: "sa", Prefix: "blobs/", Writer: sa}},
		repos:   map[string]syncer.Repository{"app": {Name: "app"}, "tools": {Name: "tools"}},
		names:   []string{"app", "tools"},
		newSyncer: func(p syncer.Plan, ts []syncer.Target) *syncer.Syncer {
			return syncer.New(p, ups, ts, syncer.Options{})
		},
	}
	return d, asia, sa
}

var asiaWantsApp = fixedSource{d: demand.Data{Misses: []demand.Miss{
	{Mirror: "asia", Repository: "app", Digest: "sha256:x", Count: 4},
	{Mirror: "asia", Repository: "tools", Count: 1},
	{Mirror: "sa", Repository: demand.Other, Count: 100},
}}}

// TestDemandRound: each demand mirror gets exactly the configured repositories that reached the
// minimum there, the report says why, and a source that cannot be read copies nothing.
func TestDemandRound(t *testing.T) {
	d, asia, sa := testDemandSync(t, asiaWantsApp)
	rep, err := d.round(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := asia.blobs(); n != 3 { // app's config and two layers
		t.Errorf("asia holds %d blobs; want app's 3", n)
	}
	if n := sa.blobs(); n != 0 {
		t.Errorf("sa holds %d blobs; want none (only unconfigured repositories were missed)", n)
	}
	if rep.Failures() != 0 || len(rep.Mirrors) != 2 || rep.Mirrors[0].Sync == nil || rep.Mirrors[1].Sync != nil {
		t.Fatalf("report = %+v", rep)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mirror asia: copying app (4 misses); below the minimum: tools (1 misses)", "mirror asia: 0 present, 3 copied", "mirror sa: nothing reached 2 misses"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	js, _ := json.Marshal(rep)
	if !strings.Contains(string(js), `"copy":[{"repository":"app","misses":4}]`) || !strings.Contains(string(js), `"targets":[{"name":"asia"`) {
		t.Errorf("JSON report: %s", js)
	}

	d.sources = []demand.Source{fixedSource{err: io.ErrUnexpectedEOF}}
	rep, err = d.round(context.Background())
	if err != nil || rep.Error == "" || rep.Failures() != 1 || len(rep.Mirrors) != 0 {
		t.Errorf("unreadable source: %+v, %v", rep, err)
	}
}

// TestPlainSyncSkipsDemandMirrors: plain sync writes only the `sync: all` mirrors and says why
// the demand ones are left alone.
func TestPlainSyncSkipsDemandMirrors(t *testing.T) {
	cfg := &config.Config{Mirrors: []config.Mirror{
		{Name: "us", Provider: config.S3, Enabled: true},
		{Name: "asia", Provider: config.GCS, Enabled: true, Sync: config.SyncDemand},
	}}
	targets := []syncer.Target{{Name: "us"}, {Name: "asia"}}
	all, byDemand := splitTargets(cfg, targets)
	if len(all) != 1 || all[0].Name != "us" || len(byDemand) != 1 || byDemand[0].Name != "asia" {
		t.Fatalf("split: %v / %v", all, byDemand)
	}
	p := syncPlan(cfg, all)
	if len(p.Skipped) != 1 || p.Skipped[0].Name != "asia" || !strings.Contains(p.Skipped[0].Reason, "sync: demand") {
		t.Errorf("skipped = %+v", p.Skipped)
	}
}

// TestDemandEvery: with --every, a demand round runs at start and again on the schedule, each
// printing its report, until the context ends.
func TestDemandEvery(t *testing.T) {
	d, asia, _ := testDemandSync(t, asiaWantsApp)
	out := &syncBuffer{}
	s := &Sync{cfg: &config.Config{}, demand: d, log: slog.New(slog.DiscardHandler),
		opts: SyncOptions{Reports: out, JSON: true, StopTimeout: 10 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx, time.Second, ""); err != nil {
		t.Fatal(err)
	}
	var rounds []DemandReport
	for _, line := range strings.Split(strings.TrimSpace(reportText(out)), "\n") {
		var r DemandReport
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("report line %q: %v", line, err)
		}
		rounds = append(rounds, r)
	}
	if len(rounds) < 2 {
		t.Fatalf("%d rounds in 3.5s with --every 1s; want at least 2:\n%s", len(rounds), reportText(out))
	}
	// The first round copied app; the next found it present.
	if c := rounds[0].Mirrors[0].Sync.Targets[0].Copied; c != 3 {
		t.Errorf("first round copied %d blobs; want 3", c)
	}
	if tg := rounds[1].Mirrors[0].Sync.Targets[0]; tg.Copied != 0 || tg.Present != 3 {
		t.Errorf("second round: %+v; want the 3 blobs present", tg)
	}
	if n := asia.blobs(); n != 3 {
		t.Errorf("asia holds %d blobs", n)
	}
}

func reportText(b *syncBuffer) string {
	text, _ := b.state()
	return text
}
