package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/syncer"
)

// syncConfig writes the proxy's configuration with the S3 and GCS mirrors empty and writable,
// the http mirror (which sync cannot write) and a sync section for app and multi, and returns its
// path. The proxy trusts the US and DE fronts.
func (s *storage) syncConfig(t *testing.T) string {
	t.Helper()
	cfg := s.storageConfig(s.direct(), []place{fromUS, fromDE}, configOptions{sync: `  repositories:
    - name: app
      tags: ["1.*"]
    - name: multi
`})
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runSync runs the built binary's sync command with --json and returns its report and exit
// error.
func runSync(t *testing.T, cfgPath string, args ...string) (syncer.Report, string, error) {
	t.Helper()
	all := append([]string{"sync", "--config", cfgPath, "--json"}, args...)
	out, err := testenv.RunErr(time.Minute, nil, needProxy(t), all...)
	var rep syncer.Report
	// The report is the one line that starts with "{"; log lines go to the same output here.
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") {
			if jerr := json.Unmarshal([]byte(line), &rep); jerr != nil {
				t.Fatalf("report is not JSON: %v\n%s", jerr, out)
			}
			return rep, out, err
		}
	}
	t.Fatalf("oci-proxy %v printed no report (%v):\n%s", all, err, out)
	return rep, out, err
}

// s3Object reads key from the S3 mirror's bucket as its owner; ok is false when it is absent.
func (s *storage) s3Object(t *testing.T, key string) (data []byte, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.s3.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: new(mirrorBucket), Key: &key})
	if err != nil {
		var nsk *s3types.NoSuchKey
		if errors.As(err, &nsk) || strings.Contains(err.Error(), "StatusCode: 404") {
			return nil, false
		}
		t.Fatalf("S3 get %s: %v", key, err)
	}
	defer out.Body.Close()
	data, err = io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data, true
}

// gcsObject reads key from the GCS mirror's bucket (the emulator serves path-style downloads
// without checking any signature); ok is false when it is absent.
func (s *storage) gcsObject(t *testing.T, key string) (data []byte, ok bool) {
	t.Helper()
	a := do(t, http.MethodGet, s.gcs.URL+"/"+mirrorBucket+"/"+key, nil)
	switch a.Status {
	case http.StatusOK:
		return a.Body, true
	case http.StatusNotFound:
		return nil, false
	}
	t.Fatalf("GCS get %s: status %d\n%s", key, a.Status, a.Body)
	return nil, false
}

// TestSync runs `oci-proxy sync` against a distribution registry with an image and an index and
// two empty bucket mirrors: every blob lands in both, with the right bytes; a second run copies
// nothing; a dry run lists a new tag's blobs without copying them. Then the proxy, with the same
// configuration, sends blob requests to the mirrors and a pull through it gets what was pushed.
func TestSync(t *testing.T) {
	start := time.Now()
	s := startStorage(t)
	t.Setenv("STORAGE_EMULATOR_HOST", s.gcs.Host) // the sync and serve commands inherit it
	image := s.reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")
	index := s.reg.PushOCIIndex(t, upstreamPrefix+"/multi:1.0")
	s.reg.PushOCIImage(t, upstreamPrefix+"/app:0.9") // outside the tag globs
	cfgPath := s.syncConfig(t)
	want := slices.Concat(image.Blobs(), index.Blobs())

	rep, out, err := runSync(t, cfgPath)
	if err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	byName := map[string]syncer.TargetReport{}
	for _, tr := range rep.Targets {
		byName[tr.Name] = tr
	}
	for _, m := range []string{s3Mirror, gcsMirror} {
		if tr := byName[m]; tr.Copied != len(want) || tr.Present != 0 || len(tr.Failed) != 0 {
			t.Errorf("mirror %s: %+v; want %d copied", m, tr, len(want))
		}
	}
	if tr := byName[webMirror]; !strings.Contains(tr.Skipped, "not writable") {
		t.Errorf("http mirror: %+v, want skipped as not writable", tr)
	}
	if !slices.ContainsFunc(rep.Skipped, func(sk syncer.Skip) bool { return sk.Repository == "app" && sk.Ref == "0.9" }) {
		t.Errorf("app:0.9 not reported as skipped: %+v", rep.Skipped)
	}
	for _, d := range want {
		key := blobKey(d)
		if b, ok := s.s3Object(t, key); !ok || testenv.SHA256Digest(b) != d {
			t.Errorf("S3 %s: present %v, content %s", key, ok, testenv.SHA256Digest(b))
		}
		if b, ok := s.gcsObject(t, key); !ok || testenv.SHA256Digest(b) != d {
			t.Errorf("GCS %s: present %v, content %s", key, ok, testenv.SHA256Digest(b))
		}
	}

	t.Run("second run copies nothing", func(t *testing.T) {
		rep, out, err := runSync(t, cfgPath)
		if err != nil {
			t.Fatalf("sync: %v\n%s", err, out)
		}
		for _, tr := range rep.Targets {
			if tr.Skipped == "" && (tr.Copied != 0 || tr.Present != len(want)) {
				t.Errorf("mirror %s: %d copied, %d present; want 0, %d", tr.Name, tr.Copied, tr.Present, len(want))
			}
		}
	})

	t.Run("dry run lists a new tag", func(t *testing.T) {
		next := s.reg.PushOCIImage(t, upstreamPrefix+"/app:1.1")
		rep, out, err := runSync(t, cfgPath, "--dry-run")
		if err != nil {
			t.Fatalf("sync --dry-run: %v\n%s", err, out)
		}
		for _, tr := range rep.Targets {
			if tr.Skipped == "" && tr.Copied != len(next.Blobs()) {
				t.Errorf("mirror %s: %d to copy, want the %d blobs of app:1.1", tr.Name, tr.Copied, len(next.Blobs()))
			}
		}
		for _, d := range next.Blobs() {
			if _, ok := s.s3Object(t, blobKey(d)); ok {
				t.Errorf("dry run copied %s to S3", d)
			}
			if _, ok := s.gcsObject(t, blobKey(d)); ok {
				t.Errorf("dry run copied %s to GCS", d)
			}
		}
	})

	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartProxy(t, needProxy(t), string(cfg))
	for _, p := range []place{fromUS, fromDE} {
		t.Run("pull from "+p.name, func(t *testing.T) {
			front := testenv.StartFront(t, p.front, p.client, proxy.URL)
			for _, d := range []string{image.Config, image.Layers[0]} {
				a := do(t, http.MethodGet, front.URL+"/v2/app/blobs/"+d, nil)
				if a.Status != http.StatusTemporaryRedirect || a.Header.Get("X-Mirror") != p.mirror {
					t.Errorf("blob %s: status %d, X-Mirror %q (%s); want 307 from %s",
						d, a.Status, a.Header.Get("X-Mirror"), a.Header.Get("X-Mirror-Reason"), p.mirror)
				}
			}
			pulled := testenv.NewSkopeo(t).Copy(t, front.Ref("app:1.0"))
			if pulled.Digest != image.Digest {
				t.Errorf("skopeo copy: digest %s, want %s", pulled.Digest, image.Digest)
			}
			checkBlobs(t, pulled, image)
		})
	}
	t.Logf("TestSync took %s", time.Since(start).Round(time.Millisecond))
}
