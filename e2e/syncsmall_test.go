package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// layersPerImage is how many small layers each image of TestSyncSmallBlobs holds.
const layersPerImage = 50

// pushSmallImages pushes n small random blobs (1 to 16 KiB) to repo, as images of
// layersPerImage layers tagged t0, t1, ..., and returns the count of blobs, configs included.
func pushSmallImages(t *testing.T, reg *testenv.Registry, repo string, n int, seed uint64) int {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 13))
	blobs := 0
	for img := 0; img*layersPerImage < n; img++ {
		var layers []blobDesc
		for range min(layersPerImage, n-img*layersPerImage) {
			data := make([]byte, 1<<10+rng.IntN(15<<10))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			d := blobDesc{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: testenv.SHA256Digest(data), Size: int64(len(data))}
			pushBlob(t, reg, repo, d.Digest, bytes.NewReader(data), d.Size)
			layers = append(layers, d)
		}
		cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"seed":%d,"image":%d}`, seed, img))
		cd := blobDesc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: testenv.SHA256Digest(cfg), Size: int64(len(cfg))}
		pushBlob(t, reg, repo, cd.Digest, bytes.NewReader(cfg), cd.Size)
		m, _ := json.Marshal(map[string]any{
			"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"config": cd, "layers": layers,
		})
		req, _ := http.NewRequest(http.MethodPut, reg.URL+"/v2/"+repo+"/manifests/t"+strconv.Itoa(img), bytes.NewReader(m))
		req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("put manifest: %s", resp.Status)
		}
		blobs += len(layers) + 1
	}
	return blobs
}

// TestSyncSmallBlobs measures sync with many small blobs into both bucket mirrors: time against
// the number of blobs (250, 500, 1000 at --concurrency 4), and against --concurrency (1, 4, 16
// with 1000 blobs). Each run copies a repository of its own, so every blob is missing from both
// mirrors. It is a benchmark, run when asked for (OCI_PROXY_SYNC_SMALL=1); lines starting
// SYNCSMALL carry the figures (docs/BENCHMARKS.md), and with OCI_PROXY_SYNC_STRICT=1 it checks
// that time grows linearly with the blobs and falls with concurrency.
func TestSyncSmallBlobs(t *testing.T) {
	if os.Getenv("OCI_PROXY_SYNC_SMALL") != "1" {
		t.Skip("a benchmark: set OCI_PROXY_SYNC_SMALL=1 to run it")
	}
	s := startStorage(t)
	t.Setenv("STORAGE_EMULATOR_HOST", s.gcs.Host)
	type trial struct {
		blobs, concurrency int
		secs               float64
	}
	trials := []*trial{{250, 4, 0}, {500, 4, 0}, {1000, 4, 0}, {1000, 1, 0}, {1000, 16, 0}}
	repos := make([]string, len(trials))
	counts := make([]int, len(trials))
	for i, tr := range trials {
		repos[i] = fmt.Sprintf("small%d", i)
		counts[i] = pushSmallImages(t, s.reg, upstreamPrefix+"/"+repos[i], tr.blobs, uint64(100+i))
	}
	// Rounds, each taking the trials in another order, every run copying into buckets of its
	// own (so that every blob is missing again, and no run pays for the objects of the ones
	// before: fake-gcs-server looks objects up by scanning its bucket's list, under one lock):
	// the machine's other work moves from minute to minute, and the best of the rounds sees
	// less of it.
	const rounds = 3
	secs := make([][]float64, len(trials))
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range rounds {
		for _, i := range rng.Perm(len(trials)) {
			tr, n := trials[i], counts[i]
			cfg := s.storageConfig(s.direct(), nil, configOptions{sync: "  repositories:\n    - name: " + repos[i] + "\n"})
			bucket := fmt.Sprintf("small-r%d-t%d", round, i)
			s.s3.CreateBucket(t, bucket)
			s.gcs.CreateBucket(t, bucket)
			cfg = strings.ReplaceAll(cfg, "bucket: "+mirrorBucket+"\n", "bucket: "+bucket+"\n")
			p := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runSyncWatched(t, p, 10*time.Minute, "--concurrency", strconv.Itoa(tr.concurrency), "--progress-every", "1s")
			if r.err != nil || r.rep.Failures() != 0 || r.rep.Blobs != n {
				t.Fatalf("sync of %d blobs: %v, %d failures, %d blobs\n%s", n, r.err, r.rep.Failures(), r.rep.Blobs, tail(r.out, 4000))
			}
			secs[i] = append(secs[i], r.seconds)
			// The copies under way, as the progress lines saw them once a second: never more
			// than --concurrency, and at least half as many while there are blobs enough (a
			// slot may be checking presence, which the lines do not count).
			most, samples := 0, 0
			for _, l := range strings.Split(r.out, "\n") {
				var p struct {
					Msg      string `json:"msg"`
					InFlight int    `json:"in_flight"`
				}
				if json.Unmarshal([]byte(l), &p) == nil && p.Msg == "sync: progress" {
					most, samples = max(most, p.InFlight), samples+1
				}
			}
			load, _ := os.ReadFile("/proc/loadavg")
			t.Logf("SYNCSMALL round=%d blobs=%d concurrency=%d sync_s=%.2f ms_per_blob=%.2f most_in_flight=%d (of %d samples) peak_rss_mib=%.1f peak_anon_mib=%.1f loadavg=%s",
				round, n, tr.concurrency, r.seconds, 1000*r.seconds/float64(n), most, samples, r.rssMiB, r.anonMiB, strings.Join(strings.Fields(string(load))[:3], "/"))
			if most > tr.concurrency || (samples > 2 && most < (tr.concurrency+1)/2) {
				t.Errorf("--concurrency %d: up to %d copies seen under way", tr.concurrency, most)
			}
		}
	}
	// The best of the rounds: the machine's other work only ever adds time.
	for i, tr := range trials {
		slices.Sort(secs[i])
		tr.secs = secs[i][0]
		t.Logf("SYNCSMALL-BEST blobs=%d concurrency=%d sync_s=%.2f ms_per_blob=%.2f (rounds: %.2f)", counts[i], tr.concurrency, tr.secs, 1000*tr.secs/float64(counts[i]), secs[i])
	}
	lin := trials[2].secs / trials[0].secs
	c4, c16 := trials[3].secs/trials[2].secs, trials[3].secs/trials[4].secs
	t.Logf("SYNCSMALL-RATIOS 1000_over_250=%.2f (linear: 4) c1_over_c4=%.2f c1_over_c16=%.2f", lin, c4, c16)
	if os.Getenv("OCI_PROXY_SYNC_STRICT") == "1" {
		// Linear within a margin for the process's start, which 250 blobs feel most.
		if lin < 2.5 || lin > 5 {
			t.Errorf("1000 blobs took %.2f× as long as 250, want about 4×", lin)
		}
		// Past a few copies at once, the two cores that the registry, both stores and sync
		// share are the limit: 16 is not asked to beat 4.
		if c4 < 1.2 || c16 < 1.2 {
			t.Errorf("--concurrency 4 is %.2f× and 16 %.2f× as fast as 1, want both faster", c4, c16)
		}
	}
}
