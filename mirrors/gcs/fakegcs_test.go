package gcs

import (
	"bytes"
	"context"
	"net/http"
	"runtime"
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

// TestFakeGCSWithADC runs a mirror with no credentials_file against the emulator while
// GOOGLE_APPLICATION_CREDENTIALS names a service-account key: URLs are signed with that key and
// point at the emulator, and blobs are written and read back through them.
func TestFakeGCSWithADC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts fake-gcs-server")
	}
	testenv.IsolateGCS(t)
	srv := testenv.StartFakeGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", srv.Host)
	const bucket = "oci-proxy-adc"
	srv.CreateBucket(t, bucket)
	keyFile, key := testenv.ServiceAccountKey(t)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", keyFile)
	b := newBackend(t, Config{Name: "adc", Bucket: bucket}, Options{})
	anon := testenv.NoRedirectClient(t, "")

	blob := bytes.Repeat([]byte("adc layer "), 1000)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.Put(ctx, testKey, bytes.NewReader(blob), int64(len(blob))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		u, _ := sign(t, b, method, testKey, time.Minute)
		if u.Host != srv.Host {
			t.Errorf("%s: URL host %s, want the emulator %s", method, u.Host, srv.Host)
		}
		if err := testenv.VerifyGCSV4(u, method, &key.PublicKey); err != nil {
			t.Errorf("%s: signature does not verify with the ADC key: %v", method, err)
		}
		if got := u.Query().Get("X-Goog-Credential"); !strings.HasPrefix(got, testEmail+"/") {
			t.Errorf("%s: X-Goog-Credential = %s", method, got)
		}
		a := testenv.Send(t, anon, testenv.NewRequest(t, method, u.String(), nil))
		if a.Status != http.StatusOK {
			t.Fatalf("%s %s: status %d\n%s", method, u.Redacted(), a.Status, a.Body)
		}
		if method == http.MethodGet && !bytes.Equal(a.Body, blob) {
			t.Errorf("GET: %d bytes, want the %d-byte object", len(a.Body), len(blob))
		}
	}
}

// TestFakeGCSCloseReleasesConnections opens backends as configuration reloads do, uses each, and
// closes it: the connections each one opened must be gone at once, not when they time out.
func TestFakeGCSCloseReleasesConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("starts fake-gcs-server")
	}
	testenv.IsolateGCS(t)
	srv := testenv.StartFakeGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", srv.Host)
	const bucket = "oci-proxy-close"
	srv.CreateBucket(t, bucket)
	keyFile, _ := testenv.ServiceAccountKey(t)
	use := func() {
		b := newBackend(t, Config{Name: "fake", Bucket: bucket, CredentialsFile: keyFile}, Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := b.Stat(ctx, testKey); err != nil {
			t.Fatalf("Stat: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	use() // whatever the first client sets up once per process
	before := runtime.NumGoroutine()
	const n = 30
	for range n {
		use()
	}
	// An idle connection held open costs two goroutines (its read and write loops): n backends
	// that kept theirs would add 2n.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+n/2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after %d backends were closed, %d before: their connections stay open", runtime.NumGoroutine(), n, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
