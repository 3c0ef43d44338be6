package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// TestSyncWebhooks runs `oci-proxy sync --listen` with the distribution registry's notifications
// pointing at it: an image pushed after the start is copied into both bucket mirrors because the
// registry announced it, a tag outside the globs is not, and requests without the token are
// refused.
func TestSyncWebhooks(t *testing.T) {
	start := time.Now()
	token := randomToken(t)
	addr := testenv.Addr(t, "127.0.0.1")
	s := startStorageWith(t, testenv.RegistryOptions{Notify: []testenv.NotifyEndpoint{{
		URL:           "http://" + addr + "/webhooks/registry",
		Headers:       map[string][]string{"Authorization": {"Bearer " + token}},
		IgnoreActions: []string{"pull"},
	}}})
	t.Setenv("STORAGE_EMULATOR_HOST", s.gcs.Host)
	cfgPath := s.syncConfig(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	appendFile(t, cfgPath, fmt.Sprintf("  webhook:\n    token_file: %q\n", tokenFile))

	proc := testenv.Start(t, "oci-proxy sync --listen", nil, needProxy(t), "sync", "--config", cfgPath, "--listen", addr)
	testenv.WaitHTTP(t, proc, "http://"+addr+"/healthz")

	image := s.reg.PushOCIImage(t, upstreamPrefix+"/app:1.5")
	outside := s.reg.PushOCIImage(t, upstreamPrefix+"/app:2.0") // matches none of the globs
	deadline := time.Now().Add(60 * time.Second)
	for _, d := range image.Blobs() {
		key := blobKey(d)
		for {
			b3, ok3 := s.s3Object(t, key)
			bg, okg := s.gcsObject(t, key)
			if ok3 && okg {
				if testenv.SHA256Digest(b3) != d || testenv.SHA256Digest(bg) != d {
					t.Errorf("%s: S3 holds %s, GCS %s", d, testenv.SHA256Digest(b3), testenv.SHA256Digest(bg))
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not copied 60s after the push (S3 %v, GCS %v)\n%s", d, ok3, okg, proc.Output())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("pushed image copied by the webhook within %s", time.Since(start).Round(time.Millisecond))

	// The push of app:2.0 was announced too; by now its copy would have happened.
	waitOutput(t, proc, "skipped app:2.0", 30*time.Second)
	for _, d := range outside.Layers {
		if _, ok := s.s3Object(t, blobKey(d)); ok {
			t.Errorf("layer %s of app:2.0, outside the globs, was copied", d)
		}
	}

	t.Run("token required", func(t *testing.T) {
		for _, tc := range []struct {
			name, url, auth string
			want            int
		}{
			{"none", "http://" + addr + "/webhooks/registry", "", http.StatusUnauthorized},
			{"wrong", "http://" + addr + "/webhooks/registry", "Bearer nope", http.StatusUnauthorized},
			{"pubsub wrong query", "http://" + addr + "/webhooks/pubsub?token=nope", "", http.StatusUnauthorized},
			{"pubsub query", "http://" + addr + "/webhooks/pubsub?token=" + token, "", http.StatusAccepted},
		} {
			data := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf(`{"action":"INSERT","tag":"%s/%s/app:1.5"}`, s.reg.Host, upstreamPrefix)))
			body := `{"message":{"data":"` + data + `","messageId":"1"},"subscription":"projects/p/subscriptions/s"}`
			if strings.Contains(tc.url, "/registry") {
				body = `{"events":[]}`
			}
			h := http.Header{"Content-Type": {"application/json"}}
			if tc.auth != "" {
				h.Set("Authorization", tc.auth)
			}
			req := testenv.NewRequest(t, http.MethodPost, tc.url, h)
			req.Body = io.NopCloser(strings.NewReader(body))
			req.ContentLength = int64(len(body))
			if a := testenv.Send(t, noRedirects, req); a.Status != tc.want {
				t.Errorf("%s: status %d, want %d", tc.name, a.Status, tc.want)
			}
		}
	})
	if strings.Contains(proc.Output(), token) {
		t.Errorf("the webhook token appears in the sync output")
	}
}

func randomToken(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// waitOutput waits until the process has printed s.
func waitOutput(t *testing.T, p *testenv.Process, s string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(p.Output(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q within %v:\n%s", p.Name, s, limit, p.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
