package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// onlyReader hides every method but Read (bytes.Reader is a Seeker, which the SDK would use to
// learn the length and rewind): Put must stream what an upstream download hands it.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// TestVersityGWWrite stores and deletes objects in a real S3 implementation that verifies SigV4,
// with bodies that cannot seek, over plain HTTP, including one large enough for a multipart
// upload, and reads them back as the root user.
func TestVersityGWWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw")
	}
	testenv.IsolateAWS(t)
	srv := testenv.StartVersityGW(t, t.TempDir())
	const bucket = "oci-proxy-write"
	srv.CreateBucket(t, bucket)
	b := newBackend(t, config.Mirror{
		Name: "versity", Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint,
		CredentialsFile: srv.CredentialsFile(t, "default"),
	}, Options{PartSize: 5 << 20})

	random := func(n int) []byte {
		p := make([]byte, n)
		if _, err := rand.Read(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	read := func(t *testing.T, key string) ([]byte, bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := srv.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: new(bucket), Key: &key})
		if err != nil {
			if strings.Contains(err.Error(), "NoSuchKey") || strings.Contains(err.Error(), "404") {
				return nil, false
			}
			t.Fatalf("get %s: %v", key, err)
		}
		defer out.Body.Close()
		data, err := io.ReadAll(out.Body)
		if err != nil {
			t.Fatal(err)
		}
		return data, true
	}

	tests := []struct {
		name    string
		data    []byte
		body    func(data []byte) io.Reader
		wantErr bool
	}{
		{name: "small", data: random(4096), body: func(d []byte) io.Reader { return onlyReader{bytes.NewReader(d)} }},
		{name: "empty", data: nil, body: func(d []byte) io.Reader { return onlyReader{bytes.NewReader(d)} }},
		{name: "multipart 12 MiB", data: random(12 << 20), body: func(d []byte) io.Reader { return onlyReader{bytes.NewReader(d)} }},
		{name: "short body", data: random(4096), wantErr: true,
			body: func(d []byte) io.Reader { return onlyReader{bytes.NewReader(d[:100])} }},
		{name: "long body", data: random(4096), wantErr: true,
			body: func(d []byte) io.Reader {
				return onlyReader{io.MultiReader(bytes.NewReader(d), strings.NewReader("x"))}
			}},
		{name: "short multipart body", data: random(12 << 20), wantErr: true,
			body: func(d []byte) io.Reader { return onlyReader{bytes.NewReader(d[:11<<20])} }},
		{name: "failing multipart body", data: random(12 << 20), wantErr: true,
			body: func(d []byte) io.Reader {
				return onlyReader{io.MultiReader(bytes.NewReader(d[:7<<20]), iotestErr{})}
			}},
		{name: "body failing at its end", data: random(4096), wantErr: true,
			body: func(d []byte) io.Reader { return onlyReader{io.MultiReader(bytes.NewReader(d), iotestErr{})} }},
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
				if strings.Contains(err.Error(), srv.Secret) {
					t.Errorf("error contains the secret key: %v", err)
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
			obj, err := b.Stat(ctx, key)
			if err != nil || !obj.Exists || obj.Size != int64(len(tt.data)) {
				t.Errorf("Stat = %+v, %v; want present with size %d", obj, err, len(tt.data))
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

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, io.ErrClosedPipe }
