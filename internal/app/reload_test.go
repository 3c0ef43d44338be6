package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
)

// reloadFixture is a config file in a temp dir with its own copy of the GeoIP database.
type reloadFixture struct {
	dir, path, db string
	listen        string
	eu, us        *blobServer
}

func newReloadFixture(t *testing.T) *reloadFixture {
	t.Helper()
	f := &reloadFixture{dir: t.TempDir(), listen: "127.0.0.1:0", eu: newBlobServer(t, "", blobA), us: newBlobServer(t, "", blobA)}
	f.path = filepath.Join(f.dir, "config.yaml")
	f.db = filepath.Join(f.dir, "city.mmdb")
	data, err := os.ReadFile(filepath.Join(geoDir(t), "city.mmdb"))
	if err != nil {
		t.Fatal(err)
	}
	f.replace(t, f.db, data)
	return f
}

// replace writes a file the way operators and Kubernetes do: a new file renamed over the old one,
// so that a reader of the old file (a memory-mapped database) keeps its copy.
func (f *reloadFixture) replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// write writes the config with the given mirrors (eu, us) and extra YAML.
func (f *reloadFixture) write(t *testing.T, withEU bool, extra string) {
	t.Helper()
	yaml := fmt.Sprintf(`
listen: %q
upstream: http://127.0.0.2:5000/v2/acme/
geoip: {database: city.mmdb}
mirrors:
  - {name: us-east, provider: http, base_url: %s, country: US, location: {lat: 38.9, lon: -77.4}}
`, f.listen, f.us.URL)
	if withEU {
		yaml += fmt.Sprintf("  - {name: eu-west, provider: http, base_url: %s, country: DE, location: {lat: 50.1, lon: 8.7}}\n", f.eu.URL)
	}
	f.replace(t, f.path, []byte(yaml+extra))
}

func mirrorFor(t *testing.T, svc *Service, client string) string {
	t.Helper()
	req := httptest.NewRequest("GET", "/v2/app/blobs/"+blobA, nil)
	req.RemoteAddr = client + ":1"
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, req)
	return rec.Header().Get("X-Mirror") + " " + rec.Header().Get("X-Mirror-Reason")
}

func metricsText(t *testing.T, svc *Service) string {
	t.Helper()
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestReload(t *testing.T) {
	f := newReloadFixture(t)
	f.write(t, false, "")
	cfg, err := config.Load(f.path, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	svc, err := New(context.Background(), cfg, BuildInfo{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { svc.Close() }()
	svc.Watch(f.path, "", 0)
	const de = "89.160.20.112"
	if got := mirrorFor(t, svc, de); got != "us-east distance" {
		t.Fatalf("before reload: %s", got)
	}

	// A new mirror is picked up.
	f.write(t, true, "")
	if err := svc.Reload(t.Context()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := mirrorFor(t, svc, de); got != "eu-west country" {
		t.Errorf("after adding eu-west: %s", got)
	}

	// A bad file is refused with its problems, and the running configuration stays.
	f.write(t, false, "mirrors_typo: []\n")
	err = svc.Reload(t.Context())
	if err == nil || !strings.Contains(err.Error(), f.path+":7: unknown key \"mirrors_typo\"") {
		t.Errorf("Reload of a bad file: %v", err)
	}
	if got := mirrorFor(t, svc, de); got != "eu-west country" {
		t.Errorf("after a refused reload: %s", got)
	}
	if !strings.Contains(logs.String(), "configuration refused") {
		t.Errorf("refusal not logged:\n%s", logs.String())
	}

	// A broken GeoIP database is refused too; the one in use keeps answering.
	f.write(t, true, "")
	f.replace(t, f.db, []byte("not a database"))
	if err := svc.Reload(t.Context()); err == nil || !strings.Contains(err.Error(), f.db) {
		t.Errorf("Reload with a broken database: %v", err)
	}
	if got := mirrorFor(t, svc, de); got != "eu-west country" {
		t.Errorf("after a refused database: %s", got)
	}
	m := metricsText(t, svc)
	for _, want := range []string{`oci_proxy_config_reloads_total{result="ok"} 1`, `oci_proxy_config_reloads_total{result="refused"} 2`, `oci_proxy_blob_redirects_total{mirror="eu-west",reason="country"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestWatch checks that a running service notices a changed file by itself, does not retry a
// refused one until it changes again, and keeps its listen address.
func TestWatch(t *testing.T) {
	f := newReloadFixture(t)
	f.write(t, false, "")
	cfg, err := config.Load(f.path, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuilder
	svc, err := New(context.Background(), cfg, BuildInfo{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { svc.Close() }()
	svc.Watch(f.path, "", 20*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	const de = "89.160.20.112"
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s; logs:\n%s", what, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	f.write(t, true, "")
	waitFor("new mirror picked up", func() bool { return mirrorFor(t, svc, de) == "eu-west country" })

	f.write(t, false, "bogus: 1\n")
	waitFor("bad file refused", func() bool { return strings.Contains(logs.String(), "configuration refused") })
	time.Sleep(200 * time.Millisecond) // ten more checks of the unchanged bad file
	if n := strings.Count(logs.String(), "configuration refused"); n != 1 {
		t.Errorf("a refused file was retried: %d refusals", n)
	}
	if got := mirrorFor(t, svc, de); got != "eu-west country" {
		t.Errorf("after a refused file: %s", got)
	}

	f.listen = "127.0.0.1:1" // bound once: needs a restart
	f.write(t, false, "")
	waitFor("fixed file picked up", func() bool { return mirrorFor(t, svc, de) == "us-east distance" })
	if got := svc.cur.Load().cfg.Listen; got != "127.0.0.1:0" {
		t.Errorf("listen became %q", got)
	}
	if !strings.Contains(logs.String(), "listen changed: restart to apply") {
		t.Errorf("listen change not reported:\n%s", logs.String())
	}
}

// syncBuilder is a strings.Builder safe for the logger's goroutines.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// objectStoreFake answers what the S3 and GCS clients ask in a presence check: a HEAD of the S3
// object, and the GCS JSON API's object metadata.
func objectStoreFake(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/storage/v1/b/") {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"kind":"storage#object","name":"x","bucket":"b","size":"3"}`)
			return
		}
		w.Header().Set("Content-Length", "3")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestReloadReleasesConnections reloads many times while every mirror's backend is used, with
// each replaced generation retired at once: the connections it opened, and the goroutines that
// serve them, must go with it, so that the count stays where it was however many reloads there
// are. Left open, every idle connection would hold three goroutines (the client's read and write
// loops, the server's handler) until its idle timeout.
func TestReloadReleasesConnections(t *testing.T) {
	testenv.IsolateAWS(t)
	testenv.IsolateGCS(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	store := objectStoreFake(t)
	t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(store.URL, "http://"))
	keyFile, _ := testenv.ServiceAccountKey(t)
	for _, tt := range []struct {
		name    string
		mirrors func(f *reloadFixture) string
		closer  string // what must close the connections, for the failure message
	}{
		{"http", func(f *reloadFixture) string {
			return fmt.Sprintf("  - {name: eu-west, provider: http, base_url: %s, country: DE}\n"+
				"  - {name: us-east, provider: http, base_url: %s, country: US}\n", f.eu.URL, f.us.URL)
		}, "Parts.Close, for the http mirrors' shared client"},
		{"s3", func(*reloadFixture) string {
			return fmt.Sprintf("  - {name: s3-us, provider: s3, bucket: b, region: us-east-1, endpoint: %s, country: US}\n", store.URL)
		}, "s3.Backend.Close, through an HTTP client it can close"},
		{"gcs", func(*reloadFixture) string {
			return fmt.Sprintf("  - {name: gcs-eu, provider: gcs, bucket: b, credentials_file: %s, country: DE}\n", keyFile)
		}, "gcs.Backend.Close"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newReloadFixture(t)
			yaml := fmt.Sprintf("listen: %q\nupstream: http://127.0.0.2:5000/v2/acme/\ngeoip: {database: city.mmdb}\nmirrors:\n%s", f.listen, tt.mirrors(f))
			f.replace(t, f.path, []byte(yaml))
			cfg, err := config.Load(f.path, config.Overrides{})
			if err != nil {
				t.Fatal(err)
			}
			svc, err := New(context.Background(), cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { svc.Close() }()
			svc.Watch(f.path, "", 0)
			d, err := oci.ParseDigest(blobA)
			if err != nil {
				t.Fatal(err)
			}
			use := func() {
				t.Helper()
				for _, m := range svc.cur.Load().parts.Selector.Mirrors() {
					ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
					obj, err := m.Backend().Stat(ctx, mirrors.Key(m.Prefix(), d))
					cancel()
					if err != nil || !obj.Exists {
						t.Fatalf("mirror %s: Stat = %+v, %v", m.Name(), obj, err)
					}
				}
			}
			use()
			before := runtime.NumGoroutine()
			const reloads = 50
			for range reloads {
				if err := svc.reload(t.Context(), time.Millisecond); err != nil {
					t.Fatalf("reload: %v", err)
				}
				use()
			}
			// A leak is at least two goroutines per reload; the slack covers timers and the last
			// retirement still under way.
			const slack = 20
			deadline := time.Now().Add(10 * time.Second)
			for runtime.NumGoroutine() > before+slack && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			after := runtime.NumGoroutine()
			t.Logf("%d goroutines before %d reloads, %d after", before, reloads, after)
			if after > before+slack {
				t.Errorf("%d goroutines after %d reloads, %d before: replaced generations keep their connections open (closed by %s)", after, reloads, before, tt.closer)
			}
		})
	}
}
