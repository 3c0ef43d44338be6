package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gcsstorage "cloud.google.com/go/storage"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/creack/pty"
	"google.golang.org/api/option"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/syncer"
)

// Sync at scale: large layers generated on the fly (never committed), synced into versitygw and
// fake-gcs-server by the built binary at its default settings, beside plain uploads of the same
// bytes with the same SDKs. The figures (lines starting "SYNCSCALE") are recorded in
// docs/BENCHMARKS.md. 1 GiB runs by default; OCI_PROXY_SYNC_SIZES=256MiB,1GiB,4GiB runs others.

// Bounds on the sync process's peak resident set for one large layer to two mirrors at the
// default settings (the goal: under 64 MiB for a layer of 4 GiB): anonymous memory is what the
// configuration bounds (buffers, heap, stacks); the total adds the pages of the binary itself,
// about 37 MiB.
const (
	maxSyncAnon = 24
	maxSyncRSS  = 64
)

// syncSizes are the layer sizes to test, from OCI_PROXY_SYNC_SIZES (default 1GiB).
func syncSizes(t *testing.T) []int64 {
	v := os.Getenv("OCI_PROXY_SYNC_SIZES")
	if v == "" {
		v = "1GiB"
	}
	var out []int64
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		mult := int64(1)
		for _, u := range []struct {
			s string
			m int64
		}{{"GiB", 1 << 30}, {"MiB", 1 << 20}} {
			if rest, ok := strings.CutSuffix(f, u.s); ok {
				f, mult = rest, u.m
				break
			}
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("OCI_PROXY_SYNC_SIZES: %q is not a size such as 256MiB or 1GiB", v)
		}
		out = append(out, n*mult)
	}
	return out
}

// genBlob is size bytes of seeded pseudo-random data, which nothing compresses, read as a
// stream: a blob of gigabytes never sits in memory.
type genBlob struct {
	seed uint64
	size int64
}

func (g genBlob) open() io.Reader {
	var seed [32]byte
	seed[0], seed[1] = byte(g.seed), byte(g.seed>>8)
	return io.LimitReader(rand.NewChaCha8(seed), g.size)
}

func (g genBlob) digest(t *testing.T) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, g.open()); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// pushBlob uploads size bytes of body to repo on the registry in one monolithic PUT.
func pushBlob(t *testing.T, reg *testenv.Registry, repo, digest string, body io.Reader, size int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, reg.URL+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start blob upload: %s, %v", resp.Status, err)
	}
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), body)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put blob %s: %s %s", digest, resp.Status, msg)
	}
}

type blobDesc struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// pushLargeImage pushes repo:tag with a config, two small layers and one of size bytes (seed
// picks its content), and returns the blobs' digests and sizes, the large one last.
func pushLargeImage(t *testing.T, reg *testenv.Registry, repo, tag string, size int64, seed uint64) []blobDesc {
	t.Helper()
	var layers []blobDesc
	for _, g := range []genBlob{{seed*10 + 1, 2 << 10}, {seed*10 + 2, 3 << 20}, {seed*10 + 3, size}} {
		d := blobDesc{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: g.digest(t), Size: g.size}
		pushBlob(t, reg, repo, d.Digest, g.open(), g.size)
		layers = append(layers, d)
	}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"seed":%d}`, seed))
	cd := blobDesc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: testenv.SHA256Digest(cfg), Size: int64(len(cfg))}
	pushBlob(t, reg, repo, cd.Digest, bytes.NewReader(cfg), cd.Size)
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": cd, "layers": layers,
	})
	req, _ := http.NewRequest(http.MethodPut, reg.URL+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(m))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest: %s %s", resp.Status, msg)
	}
	return append([]blobDesc{cd}, layers...)
}

// scaleConfig writes a configuration syncing repo big from the registry into the S3 mirror (at
// s3Endpoint) and the GCS mirror.
func (s *storage) scaleConfig(t *testing.T, s3Endpoint string) string {
	t.Helper()
	ep := s.direct()
	ep.s3 = s3Endpoint
	cfg := s.storageConfig(ep, nil, configOptions{sync: "  repositories:\n    - name: big\n"})
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// syncRun is one run of the sync binary, watched from outside.
type syncRun struct {
	rep     syncer.Report
	out     string
	err     error
	seconds float64
	rssMiB  float64 // peak resident set (VmHWM), sampled until the process ended
	anonMiB float64 // peak anonymous resident memory (RssAnon), as sampled
}

// startSync starts `oci-proxy sync` with args; wait collects it.
func startSync(t *testing.T, cfgPath string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(needProxy(t), append([]string{"sync", "--config", cfgPath}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, &stdout, &stderr
}

// procMiB reads field (VmHWM, RssAnon) of a live process's status in MiB, or 0 once it is gone.
func procMiB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// runSyncWatched runs sync with --json to completion (within limit), sampling its peak RSS.
func runSyncWatched(t *testing.T, cfgPath string, limit time.Duration, args ...string) syncRun {
	t.Helper()
	start := time.Now()
	cmd, stdout, stderr := startSync(t, cfgPath, append([]string{"--json"}, args...)...)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var r syncRun
	timeout := time.After(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case r.err = <-done:
			break wait
		case <-tick.C:
			r.rssMiB = max(r.rssMiB, procMiB(cmd.Process.Pid, "VmHWM"))
			r.anonMiB = max(r.anonMiB, procMiB(cmd.Process.Pid, "RssAnon"))
		case <-timeout:
			_ = cmd.Process.Kill()
			t.Fatalf("sync did not finish within %v:\n%s", limit, tail(stderr.String(), 4000))
		}
	}
	r.seconds = time.Since(start).Seconds()
	r.out = stderr.String()
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &r.rep); err != nil {
		t.Fatalf("report: %v\nstdout: %s\nstderr: %s", err, stdout, tail(r.out, 4000))
	}
	return r
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// checkStored streams every blob from both mirrors and checks its digest.
func (s *storage) checkStored(t *testing.T, blobs []blobDesc) {
	t.Helper()
	for _, b := range blobs {
		key := blobKey(b.Digest)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, err := s.s3.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(mirrorBucket), Key: &key})
		if err != nil {
			t.Errorf("S3 %s: %v", key, err)
		} else {
			if got := hashOf(t, out.Body); got != b.Digest {
				t.Errorf("S3 %s holds %s", key, got)
			}
			out.Body.Close()
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.gcs.URL+"/"+mirrorBucket+"/"+key, nil)
		resp, err := http.DefaultClient.Do(req)
		switch {
		case err != nil:
			t.Errorf("GCS %s: %v", key, err)
		case resp.StatusCode != http.StatusOK:
			t.Errorf("GCS %s: %s", key, resp.Status)
			resp.Body.Close()
		default:
			if got := hashOf(t, resp.Body); got != b.Digest {
				t.Errorf("GCS %s holds %s", key, got)
			}
			resp.Body.Close()
		}
		cancel()
	}
}

func hashOf(t *testing.T, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// plainUploads uploads g to each mirror as a program using the SDK directly would, in the
// requests sync sends by default (8 MiB parts to S3, one streamed request to GCS), one after
// the other, and returns the seconds each took; with both, it then uploads g to the two at the
// same time, as sync does, and returns the seconds that took too.
func (s *storage) plainUploads(t *testing.T, g genBlob, both bool) (s3Secs, gcsSecs, bothSecs float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	gc, err := gcsstorage.NewClient(ctx, option.WithEndpoint(s.gcs.URL+"/storage/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	s3Secs = s.plainS3(t, ctx, g, "plain/s3")
	gcsSecs = s.plainGCS(t, ctx, gc, g, "plain/gcs")
	if both {
		start := time.Now()
		var wg sync.WaitGroup
		wg.Go(func() { s.plainS3(t, ctx, g, "plain/both-s3") })
		wg.Go(func() { s.plainGCS(t, ctx, gc, g, "plain/both-gcs") })
		wg.Wait()
		bothSecs = time.Since(start).Seconds()
	}
	return s3Secs, gcsSecs, bothSecs
}

// plainDownload reads blob b of repo from the registry into nothing and returns the seconds it
// took: the third plain transfer sync's time is set beside.
func (s *storage) plainDownload(t *testing.T, repo string, b blobDesc) float64 {
	t.Helper()
	start := time.Now()
	resp, err := http.Get(s.reg.URL + "/v2/" + repo + "/blobs/" + b.Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != b.Size {
		t.Fatalf("download %s: %d bytes, %v", b.Digest, n, err)
	}
	return time.Since(start).Seconds()
}

func (s *storage) plainS3(t *testing.T, ctx context.Context, g genBlob, key string) float64 {
	const part = 8 << 20
	tm := transfermanager.New(s.s3.Client(), func(o *transfermanager.Options) { o.PartSizeBytes = part })
	start := time.Now()
	if _, err := tm.UploadObject(ctx, &transfermanager.UploadObjectInput{
		Bucket: aws.String(mirrorBucket), Key: &key, Body: g.open(), ContentLength: aws.Int64(g.size),
	}); err != nil {
		t.Errorf("plain S3 upload: %v", err)
	}
	secs := time.Since(start).Seconds()
	if _, err := s.s3.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(mirrorBucket), Key: &key}); err != nil {
		t.Error(err)
	}
	return secs
}

func (s *storage) plainGCS(t *testing.T, ctx context.Context, gc *gcsstorage.Client, g genBlob, key string) float64 {
	obj := gc.Bucket(mirrorBucket).Object(key)
	start := time.Now()
	w := obj.NewWriter(ctx)
	w.ChunkSize = 0 // one streamed request, as sync sends it by default
	if _, err := io.Copy(w, g.open()); err != nil {
		t.Errorf("plain GCS upload: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("plain GCS upload: %v", err)
	}
	secs := time.Since(start).Seconds()
	if err := obj.Delete(ctx); err != nil {
		t.Error(err)
	}
	return secs
}

// uploadParts counts versitygw's UploadPart requests for key logged since offset m that stored
// a part (status 200): a part cut off when the first run was killed may be logged only later.
func (s *storage) uploadParts(t *testing.T, m int, key string) int {
	t.Helper()
	b, err := os.ReadFile(s.s3Log)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b[m:]), "\n") {
		f := strings.Fields(line)
		for i, w := range f {
			if w == "s3_UploadPart" && i+1 < len(f) && f[i+1] == key {
				for _, v := range f[i+2:] {
					if len(v) == 3 && v[0] >= '1' && v[0] <= '5' && strings.Trim(v, "0123456789") == "" {
						if v == "200" {
							n++
						}
						break
					}
				}
			}
		}
	}
	return n
}

func (s *storage) logSize(t *testing.T) int {
	t.Helper()
	fi, err := os.Stat(s.s3Log)
	if err != nil {
		return 0
	}
	return int(fi.Size())
}

// storedParts counts the parts of the multipart upload of key in the S3 mirror (0: none).
func (s *storage) storedParts(t *testing.T, key string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ups, err := s.s3.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(mirrorBucket), Prefix: &key})
	if err != nil || len(ups.Uploads) == 0 {
		return 0
	}
	parts, err := s.s3.Client().ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(mirrorBucket), Key: &key, UploadId: ups.Uploads[0].UploadId})
	if err != nil {
		return 0
	}
	return len(parts.Parts)
}

// TestSyncScale syncs an image with a large layer and small blobs into both bucket mirrors at
// the default settings: every blob arrives with its digest, sync exits 0 within 1.2× the slower
// mirror's plain upload (plus a fixed allowance for the run's other work) and under maxSyncRSS.
// Then the large layer is removed from both, sync is killed (SIGKILL) once half of its parts
// are in S3, and a second run completes without sending those parts again.
func TestSyncScale(t *testing.T) {
	for _, size := range syncSizes(t) {
		t.Run(fmt.Sprintf("%dMiB", size>>20), func(t *testing.T) {
			s := startStorage(t)
			t.Setenv("STORAGE_EMULATOR_HOST", s.gcs.Host)
			blobs := pushLargeImage(t, s.reg, upstreamPrefix+"/big", "1.0", size, 1)
			big := blobs[len(blobs)-1]
			cfg := s.scaleConfig(t, s.s3.Endpoint)
			strict := os.Getenv("OCI_PROXY_SYNC_STRICT") == "1"
			s3Plain, gcsPlain, bothPlain := s.plainUploads(t, genBlob{seed: 13, size: size}, strict)
			download := s.plainDownload(t, upstreamPrefix+"/big", big)

			// OCI_PROXY_SYNC_ARGS: flags for this run (not the resuming ones), to measure others
			// than the defaults.
			r := runSyncWatched(t, cfg, 10*time.Minute, strings.Fields(os.Getenv("OCI_PROXY_SYNC_ARGS"))...)
			if r.err != nil || r.rep.Failures() != 0 {
				t.Fatalf("sync: %v, %d failures\n%s", r.err, r.rep.Failures(), tail(r.out, 4000))
			}
			s.checkStored(t, blobs)
			slower := max(s3Plain, gcsPlain)
			var perMirror []string
			for _, tr := range r.rep.Targets {
				if tr.Skipped == "" {
					perMirror = append(perMirror, fmt.Sprintf("%s=%.1fs/%dMiB", tr.Name, tr.Seconds, tr.CopiedBytes>>20))
				}
			}
			load, _ := os.ReadFile("/proc/loadavg")
			t.Logf("SYNCSCALE size_mib=%d download_s=%.1f plain_s3_s=%.1f plain_gcs_s=%.1f plain_both_s=%.1f sync_s=%.1f ratio=%.2f peak_rss_mib=%.1f peak_anon_mib=%.1f mirrors=%v loadavg=%s",
				size>>20, download, s3Plain, gcsPlain, bothPlain, r.seconds, r.seconds/slower, r.rssMiB, r.anonMiB, perMirror, strings.Join(strings.Fields(string(load))[:3], "/"))
			// Memory and time are figures to record (docs/BENCHMARKS.md), not to assert in an
			// ordinary run: under the race detector, which the test script uses, the binary is
			// several times larger and slower. OCI_PROXY_SYNC_STRICT=1, on a binary built
			// without it (OCI_PROXY_BIN), checks the bounds.
			if strict {
				if r.rssMiB >= maxSyncRSS || r.anonMiB >= maxSyncAnon {
					t.Errorf("peak RSS %.1f MiB (anonymous %.1f MiB), want under %d MiB (%d MiB)", r.rssMiB, r.anonMiB, maxSyncRSS, maxSyncAnon)
				}
				// The process's start, tag list, manifest, presence checks and small blobs
				// take about a second of their own.
				if limit := 1.2*slower + 2; r.seconds > limit {
					t.Errorf("sync took %.1fs, want at most %.1fs (1.2× the slower plain upload, %.1fs, + 2s)", r.seconds, limit, slower)
				}
			}

			// Killed half way, then run again. OCI_PROXY_SYNC_SKIP_RESUME=1 leaves it out: in
			// pieces, a layer of 4 GiB holds about 12 GiB in the emulator, which keeps objects
			// in memory and composes by copying them.
			if os.Getenv("OCI_PROXY_SYNC_SKIP_RESUME") == "1" {
				return
			}
			key := blobKey(big.Digest)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := s.s3.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(mirrorBucket), Key: &key}); err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, s.gcs.URL+"/storage/v1/b/"+mirrorBucket+"/o/"+strings.ReplaceAll(key, "/", "%2F"), nil)
			if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode/100 != 2 {
				t.Fatalf("delete from GCS: %v %v", resp, err)
			}
			parts := int((size + 8<<20 - 1) / (8 << 20))
			const piece = 64 << 20 // the default --gcs-piece-size
			pieces := int((size + piece - 1) / piece)
			hex := strings.TrimPrefix(big.Digest, "sha256:")
			cmd, _, stderr := startSync(t, cfg, "--quiet")
			deadline := time.Now().Add(5 * time.Minute)
			for s.storedParts(t, key) < parts/2 || s.gcsPieces(t, hex, piece) < pieces/4 {
				if time.Now().After(deadline) {
					t.Fatalf("half of the %d S3 parts and a quarter of the %d GCS pieces not stored within 5 minutes:\n%s", parts, pieces, tail(stderr.String(), 4000))
				}
				time.Sleep(20 * time.Millisecond)
			}
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			// A part in flight when the process was killed may be listed with the bytes that
			// arrived: only the parts that hold their bytes count as stored.
			kept, keptPieces := s.storedGoodParts(t, key, genBlob{seed: 13, size: size}), s.gcsPieces(t, hex, piece)
			if st := s.checkAbsentOrWhole(t, key, big); st != "" {
				t.Errorf("after SIGKILL: %s", st)
			}
			m, mg := s.logSize(t), len(s.gcs.Proc.Output())
			r2 := runSyncWatched(t, cfg, 10*time.Minute)
			if r2.err != nil || r2.rep.Failures() != 0 {
				t.Fatalf("sync after SIGKILL: %v, %d failures\n%s", r2.err, r2.rep.Failures(), tail(r2.out, 4000))
			}
			s.checkStored(t, blobs)
			resent, resentPieces := s.uploadParts(t, m, key), gcsPieceUploads(s.gcs.Proc.Output()[mg:], hex)
			resumed := map[string]int64{}
			for _, tr := range r2.rep.Targets {
				resumed[tr.Name] = tr.ResumedBytes
			}
			t.Logf("SYNCSCALE-RESUME size_mib=%d s3_parts=%d stored_before_kill=%d parts_sent_by_rerun=%d s3_resumed_mib=%d gcs_pieces=%d stored_before_kill=%d pieces_sent_by_rerun=%d gcs_resumed_mib=%d rerun_s=%.1f peak_rss_mib=%.1f",
				size>>20, parts, kept, resent, resumed[s3Mirror]>>20, pieces, keptPieces, resentPieces, resumed[gcsMirror]>>20, r2.seconds, r2.rssMiB)
			if resent > parts-kept || resent == 0 {
				t.Errorf("the rerun sent %d parts; %d of %d were stored already", resent, kept, parts)
			}
			if resumed[s3Mirror] < int64(kept)*(8<<20) {
				t.Errorf("the rerun reports %d bytes resumed on S3; %d parts of 8 MiB were stored", resumed[s3Mirror], kept)
			}
			if resentPieces > pieces-keptPieces || resentPieces == 0 {
				t.Errorf("the rerun sent %d pieces to GCS; %d of %d were stored already", resentPieces, keptPieces, pieces)
			}
			if resumed[gcsMirror] < int64(keptPieces)*piece {
				t.Errorf("the rerun reports %d bytes resumed on GCS; %d pieces of 64 MiB were stored", resumed[gcsMirror], keptPieces)
			}
			if left := s.gcsPieces(t, "", 0); left != 0 {
				t.Errorf("%d temporary objects left in the GCS mirror", left)
			}
		})
	}
}

// storedGoodParts counts the parts of the multipart upload of key in the S3 mirror that hold
// the bytes of g at their place (their ETag is those bytes' MD5).
func (s *storage) storedGoodParts(t *testing.T, key string, g genBlob) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ups, err := s.s3.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(mirrorBucket), Prefix: &key})
	if err != nil || len(ups.Uploads) == 0 {
		return 0
	}
	out, err := s.s3.Client().ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(mirrorBucket), Key: &key, UploadId: ups.Uploads[0].UploadId})
	if err != nil {
		return 0
	}
	etags := map[int32]string{}
	for _, p := range out.Parts {
		etags[aws.ToInt32(p.PartNumber)] = strings.Trim(aws.ToString(p.ETag), `"`)
	}
	const part = 8 << 20
	r, n := g.open(), 0
	for num := int32(1); int64(num-1)*part < g.size; num++ {
		h := md5.New()
		if _, err := io.CopyN(h, r, min(part, g.size-int64(num-1)*part)); err != nil {
			t.Fatal(err)
		}
		if e, ok := etags[num]; ok && e == hex.EncodeToString(h.Sum(nil)) {
			n++
		}
	}
	return n
}

// gcsPieces counts the temporary objects of an upload in pieces of the blob with digest hex
// (every blob's, when hex is empty) in the GCS mirror: those of size bytes, or all when size is 0.
func (s *storage) gcsPieces(t *testing.T, hex string, size int64) int {
	t.Helper()
	prefix := mirrorPrefix + "uploads/" + hex
	resp, err := http.Get(s.gcs.URL + "/storage/v1/b/" + mirrorBucket + "/o?prefix=" + url.QueryEscape(prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Items []struct {
			Size string `json:"size"`
		} `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatalf("list %s: %v", prefix, err)
	}
	n := 0
	for _, it := range list.Items {
		if size == 0 || it.Size == strconv.FormatInt(size, 10) {
			n++
		}
	}
	return n
}

// gcsPieceUploads counts the uploads of pieces of the blob with digest hex that fake-gcs-server
// logged in out and answered 200.
func gcsPieceUploads(out, hex string) int {
	n := 0
	name := "name=" + url.QueryEscape(mirrorPrefix+"uploads/"+hex+"/")
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "POST /upload/storage/v1/b/") || !strings.Contains(l, name) {
			continue
		}
		if _, rest, ok := strings.Cut(l, `HTTP/1.1\" `); ok && strings.HasPrefix(rest, "200 ") {
			n++
		}
	}
	return n
}

// checkAbsentOrWhole says what is wrong with key in either mirror: it must be absent or hold
// the whole blob, never part of it.
func (s *storage) checkAbsentOrWhole(t *testing.T, key string, b blobDesc) string {
	t.Helper()
	var bad []string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := s.s3.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(mirrorBucket), Key: &key}); err == nil && aws.ToInt64(out.ContentLength) != b.Size {
		bad = append(bad, fmt.Sprintf("S3 holds %d of %d bytes", aws.ToInt64(out.ContentLength), b.Size))
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, s.gcs.URL+"/"+mirrorBucket+"/"+key, nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && resp.ContentLength != b.Size {
			bad = append(bad, fmt.Sprintf("GCS holds %d of %d bytes", resp.ContentLength, b.Size))
		}
	}
	return strings.Join(bad, "; ")
}

// throttle is a TCP proxy on 127.0.0.1 to target that passes at most rate bytes per second in
// each direction of each connection; a rate of 0 passes nothing (a mirror whose network hangs).
type throttle struct {
	addr string
	rate atomic.Int64
}

func startThrottle(t *testing.T, target string, rate int64) *throttle {
	t.Helper()
	th := &throttle{}
	th.rate.Store(rate)
	th.addr = testenv.ForwardThrough(t, target, th.copy)
	return th
}

// copy passes src to dst in slices of a tenth of the rate, one slice per 100 ms.
func (th *throttle) copy(dst io.Writer, src io.Reader) {
	buf := make([]byte, 64<<10)
	for {
		rate := th.rate.Load()
		if rate == 0 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		n := min(int64(len(buf)), max(rate/10, 1))
		start := time.Now()
		m, err := src.Read(buf[:n])
		if m > 0 {
			if _, werr := dst.Write(buf[:m]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
		if d := time.Duration(float64(m)/float64(rate)*float64(time.Second)) - time.Since(start); d > 0 {
			time.Sleep(d)
		}
	}
}

// TestSyncSlowMirror puts the S3 mirror behind a slow link: the GCS mirror and the small blobs
// still arrive, and sync exits 0. On a terminal, the copies are drawn as progress bars; without
// one, progress goes to periodic log lines (JSON with --json), and --quiet shows none. A mirror
// whose link then hangs fails its copies as stalled, alone, and holds the other back for a
// bounded time only.
func TestSyncSlowMirror(t *testing.T) {
	s := startStorage(t)
	t.Setenv("STORAGE_EMULATOR_HOST", s.gcs.Host)
	th := startThrottle(t, s.s3.Host, 6<<20)
	cfg := s.scaleConfig(t, "http://"+th.addr)
	blobs := pushLargeImage(t, s.reg, upstreamPrefix+"/big", "1.0", 24<<20, 2)

	t.Run("terminal", func(t *testing.T) {
		cmd := exec.Command(needProxy(t), "sync", "--config", cfg)
		f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var out bytes.Buffer
		copied := make(chan struct{})
		go func() { _, _ = io.Copy(&out, f); close(copied) }()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			t.Fatal("sync on a terminal did not finish within 2 minutes")
		}
		f.Close()
		<-copied
		text := out.String()
		if err != nil {
			t.Fatalf("sync: %v\n%s", err, tail(text, 4000))
		}
		for _, want := range []string{"total", "MiB/s", "\x1b[", "[==", "sha256:", "0 failures"} {
			if !strings.Contains(text, want) {
				t.Errorf("terminal output lacks %q:\n%s", want, tail(text, 3000))
			}
		}
		s.checkStored(t, blobs)
	})

	again := func(t *testing.T) {
		t.Helper()
		for _, b := range blobs {
			key := blobKey(b.Digest)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, _ = s.s3.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(mirrorBucket), Key: &key})
			req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, s.gcs.URL+"/storage/v1/b/"+mirrorBucket+"/o/"+strings.ReplaceAll(key, "/", "%2F"), nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
			cancel()
		}
	}
	t.Run("log lines", func(t *testing.T) {
		again(t)
		r := runSyncWatched(t, cfg, 2*time.Minute, "--progress-every", "1s")
		if r.err != nil || r.rep.Failures() != 0 {
			t.Fatalf("sync: %v\n%s", r.err, tail(r.out, 4000))
		}
		if strings.Contains(r.out, "\x1b[") {
			t.Errorf("terminal escapes without a terminal:\n%s", tail(r.out, 2000))
		}
		var lines int
		for _, l := range strings.Split(r.out, "\n") {
			if strings.HasPrefix(l, "{") && strings.Contains(l, `"msg":"sync: progress"`) && strings.Contains(l, `"total_bytes"`) {
				lines++
			}
		}
		if lines == 0 {
			t.Errorf("no JSON progress line with --json:\n%s", tail(r.out, 2000))
		}
		s.checkStored(t, blobs)
	})
	t.Run("quiet", func(t *testing.T) {
		again(t)
		r := runSyncWatched(t, cfg, 2*time.Minute, "--progress-every", "1s", "--quiet")
		if r.err != nil || r.rep.Failures() != 0 {
			t.Fatalf("sync: %v\n%s", r.err, tail(r.out, 4000))
		}
		if strings.Contains(r.out, "sync: progress") {
			t.Errorf("progress shown with --quiet:\n%s", tail(r.out, 2000))
		}
	})
	t.Run("hung mirror", func(t *testing.T) {
		more := pushLargeImage(t, s.reg, upstreamPrefix+"/big", "1.0", 24<<20, 3)
		defer th.rate.Store(6 << 20)
		const stall = 6 * time.Second
		cmd, stdout, stderr := startSync(t, cfg, "--json", "--stall", stall.String())
		// The link hangs once the large layer's upload has begun: the presence checks, which
		// have short deadlines of their own, are done by then.
		deadline := time.Now().Add(time.Minute)
		for s.multipartUploads(t) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no multipart upload began within a minute:\n%s", tail(stderr.String(), 4000))
			}
			time.Sleep(10 * time.Millisecond)
		}
		th.rate.Store(0)
		hung := time.Now()
		// The GCS mirror is held back for a quarter of the stall time at most, then has the
		// whole layer: long before the hung mirror can be found stalled, which is when it got
		// it when both mirrors took one stream at the pace of the slower.
		big := blobKey(more[len(more)-1].Digest)
		var took time.Duration
		for took == 0 && time.Since(hung) < 2*stall {
			req, _ := http.NewRequest(http.MethodHead, s.gcs.URL+"/"+mirrorBucket+"/"+big, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					took = time.Since(hung)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("the GCS mirror had the layer %v after the S3 mirror hung", took)
		if took == 0 || took >= stall {
			t.Errorf("the GCS mirror had the large layer %v after the S3 mirror hung (0: not within %v), want within the stall time %v", took, 2*stall, stall)
		}
		err := cmd.Wait()
		var rep syncer.Report
		if jerr := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &rep); jerr != nil {
			t.Fatalf("report: %v\n%s", jerr, tail(stderr.String(), 4000))
		}
		if err == nil {
			t.Fatalf("sync exited 0 with a hung mirror:\n%s", tail(stderr.String(), 4000))
		}
		for _, tr := range rep.Targets {
			switch tr.Name {
			case s3Mirror:
				if len(tr.Failed) == 0 {
					t.Errorf("S3 mirror: %+v, want the copies under way failed as stalled", tr)
				}
				for _, f := range tr.Failed {
					if !strings.Contains(f.Reason, "stalled") {
						t.Errorf("S3 mirror: %s failed with %q, want stalled", f.Digest, f.Reason)
					}
				}
			case gcsMirror:
				if len(tr.Failed) != 0 {
					t.Errorf("GCS mirror failed beside the hung mirror: %+v", tr.Failed)
				}
			}
		}
		for _, b := range more {
			key := blobKey(b.Digest)
			req, _ := http.NewRequest(http.MethodGet, s.gcs.URL+"/"+mirrorBucket+"/"+key, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("GCS %s after the S3 mirror hung: %v %v", key, resp, err)
				continue
			}
			if got := hashOf(t, resp.Body); got != b.Digest {
				t.Errorf("GCS %s holds %s", key, got)
			}
			resp.Body.Close()
		}
	})
}

// TestSyncScaleTwoS3 is TestSyncScale's measurement with two S3 mirrors (two prefixes in
// versitygw's bucket) instead of an S3 and a GCS one, for layers that fake-gcs-server cannot
// hold: it keeps objects in memory and reads an upload whole, and took 17 GiB for one of
// 4 GiB. Run when asked for (OCI_PROXY_SYNC_TWO_S3=1, with OCI_PROXY_SYNC_SIZES); the
// plain reference is one upload alone and two at once, with the same SDK.
func TestSyncScaleTwoS3(t *testing.T) {
	if os.Getenv("OCI_PROXY_SYNC_TWO_S3") != "1" {
		t.Skip("a benchmark: set OCI_PROXY_SYNC_TWO_S3=1 (and OCI_PROXY_SYNC_SIZES) to run it")
	}
	for _, size := range syncSizes(t) {
		t.Run(fmt.Sprintf("%dMiB", size>>20), func(t *testing.T) {
			s := startStorage(t)
			t.Setenv("STORAGE_EMULATOR_HOST", s.gcs.Host)
			blobs := pushLargeImage(t, s.reg, upstreamPrefix+"/big", "1.0", size, 1)
			ep := s.direct()
			cfg := s.storageConfig(ep, nil, configOptions{sync: "  repositories:\n    - name: big\n"})
			// The GCS mirror becomes a second S3 one, under another prefix.
			start := strings.Index(cfg, "  - name: "+gcsMirror+"\n")
			end := strings.Index(cfg, "  - name: "+webMirror+"\n")
			if start < 0 || end < start {
				t.Fatalf("configuration without the GCS mirror:\n%s", cfg)
			}
			second := fmt.Sprintf("  - name: s3-eu\n    provider: s3\n    bucket: %s\n    endpoint: %q\n    region: %s\n    credentials_file: %q\n    prefix: second/\n    country: DE\n    location: {lat: 50.1, lon: 8.7}\n",
				mirrorBucket, ep.s3, s.s3.Region, s.s3Creds)
			cfg = cfg[:start] + second + cfg[end:]
			p := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			g := genBlob{seed: 13, size: size}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			alone := s.plainS3(t, ctx, g, "plain/alone")
			begun := time.Now()
			var wg sync.WaitGroup
			wg.Go(func() { s.plainS3(t, ctx, g, "plain/a") })
			wg.Go(func() { s.plainS3(t, ctx, g, "plain/b") })
			wg.Wait()
			both := time.Since(begun).Seconds()

			r := runSyncWatched(t, p, 20*time.Minute, strings.Fields(os.Getenv("OCI_PROXY_SYNC_ARGS"))...)
			if r.err != nil || r.rep.Failures() != 0 {
				t.Fatalf("sync: %v, %d failures\n%s", r.err, r.rep.Failures(), tail(r.out, 4000))
			}
			for _, prefix := range []string{mirrorPrefix, "second/"} {
				for _, b := range blobs {
					key := prefix + "sha256/" + strings.TrimPrefix(b.Digest, "sha256:")
					out, err := s.s3.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(mirrorBucket), Key: &key})
					if err != nil {
						t.Errorf("S3 %s: %v", key, err)
						continue
					}
					if got := hashOf(t, out.Body); got != b.Digest {
						t.Errorf("S3 %s holds %s", key, got)
					}
					out.Body.Close()
				}
			}
			load, _ := os.ReadFile("/proc/loadavg")
			t.Logf("SYNCSCALE-TWO-S3 size_mib=%d plain_alone_s=%.1f plain_two_at_once_s=%.1f sync_s=%.1f ratio_alone=%.2f ratio_two=%.2f peak_rss_mib=%.1f peak_anon_mib=%.1f loadavg=%s",
				size>>20, alone, both, r.seconds, r.seconds/alone, r.seconds/both, r.rssMiB, r.anonMiB, strings.Join(strings.Fields(string(load))[:3], "/"))
			if os.Getenv("OCI_PROXY_SYNC_STRICT") == "1" && (r.rssMiB >= maxSyncRSS || r.anonMiB >= maxSyncAnon) {
				t.Errorf("peak RSS %.1f MiB (anonymous %.1f MiB), want under %d MiB (%d MiB)", r.rssMiB, r.anonMiB, maxSyncRSS, maxSyncAnon)
			}
		})
	}
}
