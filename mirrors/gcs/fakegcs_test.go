package gcs

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// TestFakeGCS runs the backend against fake-gcs-server through the Go client's emulator support,
// and fetches the URLs with a client that holds no credentials, as a container client following
// a redirect does. The emulator ignores signatures; TestSignedURL verifies them.
func TestFakeGCS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts fake-gcs-server")
	}
	testenv.IsolateGCS(t)
	srv := testenv.StartFakeGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", srv.Host)
	const bucket = "oci-proxy-test"
	srv.CreateBucket(t, bucket)
	blob := bytes.Repeat([]byte("layer data "), 1000)
	srv.Upload(t, bucket, testKey, blob)
	keyFile, key := testenv.ServiceAccountKey(t)

	signed := newBackend(t, Config{Name: "fake", Bucket: bucket, CredentialsFile: keyFile}, Options{})
	public := newBackend(t, Config{Name: "fake-public", Bucket: bucket, Public: true}, Options{})

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
		b := newBackend(t, Config{Name: "fake", Bucket: "no-such-bucket", CredentialsFile: keyFile}, Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if obj, err := b.Stat(ctx, testKey); err != nil || obj.Exists {
			t.Fatalf("Stat = %+v, %v; want absent", obj, err)
		}
	})

	anon := testenv.NoRedirectClient(t, "")
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
			a := testenv.Send(t, anon, testenv.NewRequest(t, tt.method, u.String(), nil))
			if a.Status != http.StatusOK {
				t.Fatalf("%s %s: status %d\n%s", tt.method, u.Redacted(), a.Status, a.Body)
			}
			if tt.method == http.MethodGet && !bytes.Equal(a.Body, blob) {
				t.Errorf("body: %d bytes, want the %d-byte object", len(a.Body), len(blob))
			}
			if got := a.Header.Get("Content-Length"); got != strconv.Itoa(len(blob)) {
				t.Errorf("Content-Length %q, want %d", got, len(blob))
			}
		})
	}
}
