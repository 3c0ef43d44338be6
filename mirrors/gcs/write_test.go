package gcs

import (
	"net/http"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/mirrors/mirrorstest"
)

// TestFakeGCSWrite stores and deletes objects in fake-gcs-server, including one larger than an
// upload chunk, and reads them back through signed URLs as a client would.
func TestFakeGCSWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts fake-gcs-server")
	}
	testenv.IsolateGCS(t)
	srv := testenv.StartFakeGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", srv.Host)
	const bucket = "oci-proxy-write"
	srv.CreateBucket(t, bucket)
	keyFile, _ := testenv.ServiceAccountKey(t)
	b := newBackend(t, Config{Name: "fake", Bucket: bucket, CredentialsFile: keyFile}, Options{})
	anon := testenv.NoRedirectClient(t, "")

	read := func(t *testing.T, key string) ([]byte, bool) {
		t.Helper()
		u, _ := sign(t, b, http.MethodGet, key, time.Minute)
		a := testenv.Send(t, anon, testenv.NewRequest(t, http.MethodGet, u.String(), nil))
		switch a.Status {
		case http.StatusOK:
			return a.Body, true
		case http.StatusNotFound:
			return nil, false
		}
		t.Fatalf("GET %s: status %d", key, a.Status)
		return nil, false
	}

	mirrorstest.TestWriter(t, b, read, mirrorstest.Case{Name: "two chunks", Size: chunkSize + 4<<20})
}
