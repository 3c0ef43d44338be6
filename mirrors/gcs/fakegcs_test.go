package gcs

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// TestFakeGCS runs the backend against fake-gcs-server through the Go client's emulator support,
// and fetches the URLs with a client that holds no credentials, as a container client following
// a redirect does. The emulator ignores signatures; TestSignedURL verifies them.
func TestFakeGCS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts fake-gcs-server")
	}
	isolateGCS(t)
	srv := testenv.StartFakeGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", srv.Host)
	const bucket = "oci-proxy-test"
	srv.CreateBucket(t, bucket)
	blob := bytes.Repeat([]byte("layer data "), 1000)
	srv.Upload(t, bucket, testKey, blob)
	keyFile, key := testenv.ServiceAccountKey(t)

	signed := newBackend(t, config.Mirror{Name: "fake", Bucket: bucket, CredentialsFile: keyFile}, Options{})
	public := newBackend(t, config.Mirror{Name: "fake-public", Bucket: bucket, Public: true}, Options{})

	t.Run("Stat", func(t *testing.T) {
		tests := []struct {
			name     string
			b        *Backend
			key      string
			want     bool
			wantSize int64
		}{
			{name: "present", b: signed, key: testKey, want: true, wantSize: int64(len(blob))},
			{name: "absent", b: signed, key: "blobs/sha256/" + strings.Repeat("0", 64), want: false, wantSize: -1},
			{name: "public present", b: public, key: testKey, want: true, wantSize: int64(len(blob))},
			{name: "public absent", b: public, key: "blobs/sha256/" + strings.Repeat("0", 64), want: false, wantSize: -1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				obj, err := tt.b.Stat(ctx, tt.key)
				if err != nil {
					t.Fatalf("Stat: %v", err)
				}
				if obj.Exists != tt.want || obj.Size != tt.wantSize {
					t.Errorf("Stat = %+v, want Exists %v Size %d", obj, tt.want, tt.wantSize)
				}
			})
		}
	})

	t.Run("Stat of a missing bucket is absent", func(t *testing.T) {
		b := newBackend(t, config.Mirror{Name: "fake", Bucket: "no-such-bucket", CredentialsFile: keyFile}, Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if obj, err := b.Stat(ctx, testKey); err != nil || obj.Exists {
			t.Fatalf("Stat = %+v, %v; want absent", obj, err)
		}
	})

	anon := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, tt := range []struct {
		name   string
		b      *Backend
		method string
	}{
		{"signed GET", signed, http.MethodGet},
		{"signed HEAD", signed, http.MethodHead},
		{"public GET", public, http.MethodGet},
		{"public HEAD", public, http.MethodHead},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, _ := sign(t, tt.b, tt.method, testKey, time.Minute)
			if u.Host != srv.Host {
				t.Errorf("URL host %s, want the emulator %s", u.Host, srv.Host)
			}
			if tt.b == signed {
				if err := testenv.VerifyGCSV4(u, tt.method, &key.PublicKey); err != nil {
					t.Errorf("signature does not verify: %v", err)
				}
			}
			status, body, h := fetch(t, anon, tt.method, u)
			if status != http.StatusOK {
				t.Fatalf("%s %s: status %d\n%s", tt.method, u.Redacted(), status, body)
			}
			if tt.method == http.MethodGet && !bytes.Equal(body, blob) {
				t.Errorf("body: %d bytes, want the %d-byte object", len(body), len(blob))
			}
			if got := h.Get("Content-Length"); got != strconv.Itoa(len(blob)) {
				t.Errorf("Content-Length %q, want %d", got, len(blob))
			}
		})
	}
}

func fetch(t *testing.T, c *http.Client, method string, u *url.URL) (int, []byte, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body, resp.Header
}
