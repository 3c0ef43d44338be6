package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// The load and fault suite. Each test runs the real binary against the real mirrors under load
// from a small generator in this file and reports figures with t.Log (lines starting "SOAK");
// scripts/soak.sh runs them at full length (OCI_PROXY_SOAK=full) and docs/RELIABILITY.md records
// the figures. In the ordinary test run they are short; their goals (counts, not timings) hold
// either way.

// soakScale is the suite's length and load: short by default, full with OCI_PROXY_SOAK=full.
func soakScale() (d time.Duration, conns int) {
	if os.Getenv("OCI_PROXY_SOAK") == "full" {
		return 60 * time.Second, 256
	}
	return 4 * time.Second, 32
}

// loadResult is what a load run saw.
type loadResult struct {
	requests  int
	failed    int         // transport errors and answers other than 3xx
	statuses  map[int]int // by status, 0 for transport errors
	latencies []time.Duration
	errs      []string // the first few failures
}

func (r *loadResult) p(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	slices.Sort(r.latencies)
	return r.latencies[min(len(r.latencies)-1, int(q*float64(len(r.latencies))))]
}

func (r *loadResult) String() string {
	return fmt.Sprintf("requests=%d failed=%d p50=%v p99=%v statuses=%v", r.requests, r.failed,
		r.p(0.50).Round(time.Microsecond), r.p(0.99).Round(time.Microsecond), r.statuses)
}

// load sends GETs from conns connections until ctx ends, each to target(i) (a URL and the
// X-Forwarded-For to send), not following redirects; ok says which statuses count as served.
func load(ctx context.Context, conns int, target func(n int) (string, string), ok func(int) bool) *loadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer tr.CloseIdleConnections()
	var (
		mu  sync.Mutex
		all = &loadResult{statuses: map[int]int{}}
		wg  sync.WaitGroup
		seq atomic.Int64
	)
	for range conns {
		wg.Go(func() {
			local := &loadResult{statuses: map[int]int{}}
			for ctx.Err() == nil {
				u, xff := target(int(seq.Add(1)))
				req, _ := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, u, nil)
				if xff != "" {
					req.Header.Set("X-Forwarded-For", xff)
				}
				start := time.Now()
				resp, err := c.Do(req)
				local.requests++
				status := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				local.latencies = append(local.latencies, time.Since(start))
				local.statuses[status]++
				if status == 0 || !ok(status) {
					local.failed++
					if len(local.errs) < 3 {
						local.errs = append(local.errs, fmt.Sprintf("%s: status %d, %v", u, status, err))
					}
				}
			}
			mu.Lock()
			all.requests += local.requests
			all.failed += local.failed
			all.latencies = append(all.latencies, local.latencies...)
			for k, v := range local.statuses {
				all.statuses[k] += v
			}
			all.errs = append(all.errs, local.errs...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return all
}

func redirected(status int) bool { return status >= 300 && status < 400 }

// peakRSS is a process's high-water resident set (VmHWM), in MiB.
func peakRSS(t *testing.T, p *testenv.Process) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// soakStorage is the storage setup with an image mirrored everywhere and a proxy that trusts
// this machine's loopback as a proxy, so the generator can play clients anywhere.
type soakStorage struct {
	*storage
	proxy  *testenv.Proxy
	blobs  []string // mirrored blob digests
	geoip  string   // the proxy's own copy of the GeoIP database
	config string
}

func startSoak(t *testing.T, presence string) *soakStorage {
	t.Helper()
	s := &soakStorage{storage: startStorage(t)}
	im := s.reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")
	s.mirrorImage(t, im)
	s.blobs = im.Blobs()
	// The proxy reads its own copy of the database, so that the churn test can replace it.
	db, err := os.ReadFile(s.storage.geoip)
	if err != nil {
		t.Fatal(err)
	}
	s.geoip = filepath.Join(t.TempDir(), "city.mmdb")
	if err := os.WriteFile(s.geoip, db, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := s.storageConfig(s.direct(), nil, configOptions{presence: presence})
	cfg = strings.Replace(cfg, "trusted_proxies: []", `trusted_proxies: ["127.0.0.1/32"]`, 1)
	cfg = strings.Replace(cfg, strconv.Quote(s.storage.geoip), strconv.Quote(s.geoip), 1)
	t.Setenv("STORAGE_EMULATOR_HOST", s.gcs.Host)
	s.proxy = testenv.StartProxy(t, needProxy(t), cfg, "--shutdown-grace", "5s")
	s.config = s.proxy.Config
	return s
}

// knownBlob is request n's target: a mirrored blob, from a client in one of the places.
func (s *soakStorage) knownBlob(n int) (string, string) {
	return s.proxy.URL + "/v2/app/blobs/" + s.blobs[n%len(s.blobs)], places[n%len(places)].client
}

// The blob path under steady load: every answer a redirect.
func TestSoakBlobLoad(t *testing.T) {
	d, conns := soakScale()
	s := startSoak(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	r := load(ctx, conns, s.knownBlob, redirected)
	rss := peakRSS(t, s.proxy.Proc)
	t.Logf("SOAK blob-load conns=%d duration=%v %v rps=%.0f peak_rss_mib=%.1f", conns, d, r, float64(r.requests)/d.Seconds(), rss)
	if r.failed != 0 {
		t.Errorf("%d of %d requests were not redirects: %v", r.failed, r.requests, r.errs)
	}
}

// The blob path while the configuration and the GeoIP database are replaced 20 times (in place
// and by rename), the S3 mirror is frozen and released, and the GCS emulator is killed: no
// request fails.
func TestSoakChurn(t *testing.T) {
	d, conns := soakScale()
	s := startSoak(t, "  timeout: 300ms\n  health_after: 2\n  backoff: 1s\n")
	cfgBytes, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	dbBytes, err := os.ReadFile(s.geoip)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var churn sync.WaitGroup
	events := make(chan string, 100)
	churn.Go(func() {
		step := d / 22
		for i := range 20 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(step):
			}
			// A changed weight is a real edit; every other round writes in place, the others
			// rename a new file over the old one, as editors, cp and ConfigMaps do.
			edited := strings.Replace(string(cfgBytes), "country: SG", fmt.Sprintf("country: SG\n    weight: %d", 100+i), 1)
			replace(t, s.config, []byte(edited), i%2 == 0)
			replace(t, s.geoip, dbBytes, i%2 == 1)
			// SIGHUP reloads at once; the file watch would within its interval.
			_ = s.proxy.Proc.Cmd.Process.Signal(syscall.SIGHUP)
			switch i {
			case 5:
				_ = s.s3.Proc.Cmd.Process.Signal(syscall.SIGSTOP)
				events <- "s3 frozen"
			case 9:
				_ = s.s3.Proc.Cmd.Process.Signal(syscall.SIGCONT)
				events <- "s3 released"
			case 12:
				s.gcs.Proc.Stop()
				events <- "gcs killed"
			}
		}
	})
	r := load(ctx, conns, s.knownBlob, redirected)
	churn.Wait()
	_ = s.s3.Proc.Cmd.Process.Signal(syscall.SIGCONT)
	close(events)
	var seen []string
	for e := range events {
		seen = append(seen, e)
	}
	reloads := strings.Count(s.proxy.Logs(), "configuration reloaded")
	t.Logf("SOAK churn conns=%d duration=%v %v reloads=%d events=%v", conns, d, r, reloads, seen)
	if r.failed != 0 {
		t.Errorf("%d of %d requests failed during the churn: %v", r.failed, r.requests, r.errs)
	}
	if s.proxy.Proc.Exited() {
		t.Fatalf("the proxy died:\n%s", s.proxy.Logs())
	}
	if reloads == 0 {
		t.Error("no reload happened: the churn tested nothing")
	}
}

// replace writes data to path in place (truncate, then write after a pause, as a slow cp or
// curl -o does: requests meanwhile meet an empty file) or by renaming a new file over it.
func replace(t *testing.T, path string, data []byte, inPlace bool) {
	t.Helper()
	if inPlace {
		if err := os.Truncate(path, 0); err != nil {
			t.Error(err)
		}
		time.Sleep(50 * time.Millisecond)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Error(err)
		}
		return
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Error(err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Error(err)
	}
}

// A flood of random digests, which no mirror holds: how many presence checks it makes at the
// http mirror per second, and what it does to the latency of known blobs asked for meanwhile.
func TestSoakRandomDigests(t *testing.T) {
	d, conns := soakScale()
	s := startSoak(t, "")
	mark := s.web.Mark()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var known *loadResult
	var wg sync.WaitGroup
	wg.Go(func() { known = load(ctx, 4, s.knownBlob, redirected) })
	flood := load(ctx, conns, func(n int) (string, string) {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return s.proxy.URL + "/v2/app/blobs/sha256:" + hex.EncodeToString(b), fromSG.client
	}, redirected)
	wg.Wait()
	heads := 0
	for _, a := range s.web.Since(mark) {
		if a.Method == http.MethodHead {
			heads++
		}
	}
	t.Logf("SOAK random-digests conns=%d duration=%v flood{%v} mirror_heads=%d heads_per_s=%.0f known{%v}",
		conns, d, flood, heads, float64(heads)/d.Seconds(), known)
	if flood.failed != 0 || known.failed != 0 {
		t.Errorf("failures: flood %d (%v), known blobs %d (%v)", flood.failed, flood.errs, known.failed, known.errs)
	}
	// presence.max_checks_per_second (200 by default) bounds the checks a flood can make, with
	// one second's worth of burst.
	if limit := int(200 * (d.Seconds() + 1) * 1.1); heads > limit {
		t.Errorf("%d presence checks at the mirror in %v: more than the budget allows (%d)", heads, d, limit)
	}
}

// SIGTERM in the middle of load, behind a load balancer that follows /readyz: two replicas, one
// stopped with a grace; no request is lost.
func TestSoakRollingRestart(t *testing.T) {
	d, conns := soakScale()
	s := startSoak(t, "")
	second := testenv.StartProxy(t, needProxy(t), mustRead(t, s.config), "--shutdown-grace", "5s")
	replicas := []*testenv.Proxy{s.proxy, second}
	var ready [2]atomic.Bool
	ready[0].Store(true)
	ready[1].Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	// The balancer's health check: every 100ms, as load balancers do (every few seconds, with
	// a grace to match).
	var lb sync.WaitGroup
	lb.Go(func() {
		c := &http.Client{Timeout: time.Second}
		for ctx.Err() == nil {
			for i, p := range replicas {
				resp, err := c.Get(p.URL + "/readyz")
				up := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					resp.Body.Close()
				}
				ready[i].Store(up)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	var stopped atomic.Bool
	lb.Go(func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d / 3):
		}
		_ = s.proxy.Proc.Cmd.Process.Signal(syscall.SIGTERM)
		stopped.Store(true)
	})
	r := load(ctx, conns, func(n int) (string, string) {
		u, xff := s.knownBlob(n)
		i := n % 2
		if !ready[i].Load() {
			i = 1 - i
		}
		return strings.Replace(u, s.proxy.URL, replicas[i].URL, 1), xff
	}, redirected)
	lb.Wait()
	t.Logf("SOAK rolling-restart conns=%d duration=%v %v", conns, d, r)
	if !stopped.Load() || !waitExit(s.proxy.Proc, 10*time.Second) {
		t.Fatal("the stopped replica did not exit")
	}
	if r.failed != 0 {
		t.Errorf("%d requests lost across the restart: %v", r.failed, r.errs)
	}
}

func waitExit(p *testenv.Process, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !p.Exited() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Sync stopped mid-copy, by SIGTERM (the copies in flight finish) and by SIGKILL (nothing can
// finish), then run again: no object in a mirror is ever partial or corrupt, SIGTERM leaves no
// multipart upload behind, and the rerun completes.
func TestSoakSyncInterrupted(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			s := startStorage(t)
			t.Setenv("STORAGE_EMULATOR_HOST", s.gcs.Host)
			// Layers over the multipart threshold (8 MiB), random so that nothing compresses.
			im := s.reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")
			big := s.reg.Push(t, upstreamPrefix+"/big:1.0", testenv.OCIImage(t, 3, 20<<20, "linux/amd64"))
			cfg := s.syncConfig(t)
			cfg = strings.Replace(mustRead(t, cfg), "    - name: multi\n", "    - name: big\n", 1)
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			p := testenv.Start(t, "oci-proxy sync", nil, needProxy(t), "sync", "--config", path, "--concurrency", "2")
			// Wait until an upload is under way, then stop the copy.
			deadline := time.Now().Add(30 * time.Second)
			for s.multipartUploads(t) == 0 && !p.Exited() {
				if time.Now().After(deadline) {
					t.Fatal("no multipart upload started within 30s")
				}
				time.Sleep(20 * time.Millisecond)
			}
			_ = p.Cmd.Process.Signal(sig)
			if !waitExit(p, 2*time.Minute) {
				t.Fatalf("sync did not stop after %v", sig)
			}
			orphans := s.multipartUploads(t)
			partial := s.checkMirrored(t, slices.Concat(big.Blobs(), im.Blobs()))
			rep, out, err := runSync(t, path)
			if err != nil || rep.Failures() != 0 {
				t.Fatalf("sync again: %v\n%s", err, out)
			}
			missingAfter := s.checkMirrored(t, slices.Concat(big.Blobs(), im.Blobs()))
			t.Logf("SOAK sync-%s orphaned_multipart_uploads=%d corrupt_objects=%d missing_after_rerun=%d",
				strings.ToLower(strings.TrimPrefix(sig.String(), "signal ")), orphans, partial.corrupt, missingAfter.missing)
			if partial.corrupt != 0 || missingAfter.corrupt != 0 || missingAfter.missing != 0 {
				t.Errorf("after %v: %d corrupt objects; after the rerun %d corrupt, %d missing", sig, partial.corrupt, missingAfter.corrupt, missingAfter.missing)
			}
			if sig == syscall.SIGTERM && orphans != 0 {
				t.Errorf("SIGTERM left %d multipart uploads behind", orphans)
			}
		})
	}
}

// multipartUploads counts the uploads in progress (or abandoned) in the S3 mirror's bucket.
func (s *storage) multipartUploads(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := s.s3.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: new(mirrorBucket)})
	if err != nil {
		t.Fatalf("list multipart uploads: %v", err)
	}
	return len(out.Uploads)
}

type mirrorState struct{ missing, corrupt int }

// checkMirrored reads every blob from both bucket mirrors: absent is missing, present with other
// bytes is corrupt.
func (s *storage) checkMirrored(t *testing.T, digests []string) mirrorState {
	t.Helper()
	var st mirrorState
	for _, d := range digests {
		key := blobKey(d)
		for _, get := range []func(*testing.T, string) ([]byte, bool){s.s3Object, s.gcsObject} {
			data, ok := get(t, key)
			switch {
			case !ok:
				st.missing++
			case testenv.SHA256Digest(data) != d:
				st.corrupt++
			}
		}
	}
	return st
}
