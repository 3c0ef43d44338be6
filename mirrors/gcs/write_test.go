package gcs

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// onlyReader hides every method but Read: Put must stream what an upstream download hands it.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

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
	b := newBackend(t, config.Mirror{Name: "fake", Bucket: bucket, CredentialsFile: keyFile}, Options{})
	anon := testenv.NoRedirectClient(t, "")

	random := func(n int) []byte {
		p := make([]byte, n)
		if _, err := rand.Read(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
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

	tests := []struct {
		name    string
		data    []byte
		body    func(data []byte) io.Reader
		wantErr bool
	}{
		{name: "small", data: random(4096), body: func(d []byte) io.Reader { return onlyReader{bytes.NewReader(d)} }},
		{name: "empty", data: nil, body: func(d []byte) io.Reader { return onlyReader{bytes.NewReader(d)} }},
		{name: "two chunks", data: random(chunkSize + 4<<20), body: func(d []byte) io.Reader { return onlyReader{bytes.NewReader(d)} }},
		{name: "short body", data: random(4096), wantErr: true,
			body: func(d []byte) io.Reader { return onlyReader{bytes.NewReader(d[:100])} }},
		{name: "long body", data: random(4096), wantErr: true,
			body: func(d []byte) io.Reader {
				return onlyReader{io.MultiReader(bytes.NewReader(d), strings.NewReader("x"))}
			}},
		{name: "failing body", data: random(4096), wantErr: true,
			body: func(d []byte) io.Reader { return onlyReader{io.MultiReader(bytes.NewReader(d[:100]), failReader{})} }},
		{name: "body failing at its end", data: random(4096), wantErr: true,
			body: func(d []byte) io.Reader { return onlyReader{io.MultiReader(bytes.NewReader(d), failReader{})} }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "blobs/sha256/" + strings.Repeat(string(rune('a'+i)), 64)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := b.Put(ctx, key, tt.body(tt.data), int64(len(tt.data)))
			if tt.wantErr {
				if err == nil {
					t.Fatal("Put succeeded, want an error")
				}
				if _, ok := read(t, key); ok {
					t.Errorf("a failed Put left an object under %s", key)
				}
				return
			}
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			got, ok := read(t, key)
			if !ok || !bytes.Equal(got, tt.data) {
				t.Fatalf("read back %d bytes (found %v), want the %d written", len(got), ok, len(tt.data))
			}
			if err := b.Delete(ctx, key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if obj, err := b.Stat(ctx, key); err != nil || obj.Exists {
				t.Errorf("Stat after Delete = %+v, %v; want absent", obj, err)
			}
		})
	}

	t.Run("Delete of a missing key", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Delete(ctx, "blobs/sha256/"+strings.Repeat("0", 64)); err != nil {
			t.Errorf("Delete: %v, want nil", err)
		}
	})
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, io.ErrClosedPipe }
