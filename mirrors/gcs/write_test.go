package gcs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

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

// TestFakeGCSUploadPieces uploads a blob in pieces into fake-gcs-server: composed through
// composites (more than 32 pieces), with nothing under the key before the compose and no
// temporary object left after it; an upload cut off keeps its finished pieces, which the next
// one reads past instead of sending; and a failing body leaves nothing at all.
func TestFakeGCSUploadPieces(t *testing.T) {
	if testing.Short() {
		t.Skip("starts fake-gcs-server")
	}
	testenv.IsolateGCS(t)
	srv := testenv.StartFakeGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", srv.Host)
	const bucket = "oci-proxy-pieces"
	srv.CreateBucket(t, bucket)
	keyFile, _ := testenv.ServiceAccountKey(t)
	b := newBackend(t, Config{Name: "fake", Bucket: bucket, CredentialsFile: keyFile}, Options{})
	const piece = 1 << 20
	data := make([]byte, 40*piece+1234) // 41 pieces: a composite of 32, then the rest
	rand.NewChaCha8([32]byte{1}).Read(data)
	opts := UploadOptions{PieceSize: piece, TempPrefix: "blobs/uploads/", Parallel: 2, Resume: true}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	list := func(t *testing.T, prefix string) map[string]int64 {
		t.Helper()
		names := map[string]int64{}
		it := b.bucket.Objects(ctx, &storage.Query{Prefix: prefix})
		for {
			a, err := it.Next()
			if errors.Is(err, iterator.Done) {
				return names
			}
			if err != nil {
				t.Fatal(err)
			}
			names[a.Name] = a.Size
		}
	}
	check := func(t *testing.T, key string) {
		t.Helper()
		r, err := b.bucket.Object(key).NewReader(ctx)
		if err != nil {
			t.Fatalf("read %s: %v", key, err)
		}
		defer r.Close()
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s holds %d bytes, equal %v, %v", key, len(got), bytes.Equal(got, data), err)
		}
		if left := list(t, "blobs/uploads/"); len(left) != 0 {
			t.Errorf("temporary objects left: %v", left)
		}
	}

	t.Run("whole", func(t *testing.T) {
		key := "blobs/sha256/" + strings.Repeat("a", 64)
		resumed, err := b.Upload(ctx, key, bytes.NewReader(data), int64(len(data)), opts)
		if err != nil || resumed != 0 {
			t.Fatalf("Upload = %d, %v", resumed, err)
		}
		check(t, key)
	})
	t.Run("cut off, then resumed", func(t *testing.T) {
		key := "blobs/sha256/" + strings.Repeat("b", 64)
		cctx, ccancel := context.WithCancel(ctx)
		cut := &cutReader{r: bytes.NewReader(data), at: 10*piece + 300, cancel: ccancel}
		if _, err := b.Upload(cctx, key, cut, int64(len(data)), opts); !errors.Is(err, context.Canceled) {
			t.Fatalf("cut Upload: %v, want context.Canceled", err)
		}
		if obj, err := b.Stat(ctx, key); err != nil || obj.Exists {
			t.Fatalf("after the cut, Stat = %+v, %v; want nothing under the key", obj, err)
		}
		// A piece cut off half way may be stored by the emulator, unlike GCS: it is not kept.
		kept := 0
		for _, size := range list(t, "blobs/uploads/") {
			if size == piece {
				kept++
			}
		}
		if kept < 8 {
			t.Fatalf("%d pieces kept after the cut, want about 10", kept)
		}
		resumed, err := b.Upload(ctx, key, bytes.NewReader(data), int64(len(data)), opts)
		if err != nil || resumed != int64(kept)*piece {
			t.Fatalf("resumed Upload = %d, %v; want the %d pieces kept (%d bytes)", resumed, err, kept, kept*piece)
		}
		check(t, key)
	})
	t.Run("failing body", func(t *testing.T) {
		key := "blobs/sha256/" + strings.Repeat("c", 64)
		body := io.MultiReader(bytes.NewReader(data[:5*piece+7]), iotest.ErrReader(io.ErrClosedPipe))
		if _, err := b.Upload(ctx, key, body, int64(len(data)), opts); !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("Upload of a failing body: %v", err)
		}
		if obj, err := b.Stat(ctx, key); err != nil || obj.Exists {
			t.Errorf("Stat = %+v, %v; want absent", obj, err)
		}
		if left := list(t, "blobs/uploads/"); len(left) != 0 {
			t.Errorf("temporary objects left after a failing body: %v", left)
		}
	})
	t.Run("body too long", func(t *testing.T) {
		key := "blobs/sha256/" + strings.Repeat("d", 64)
		if _, err := b.Upload(ctx, key, bytes.NewReader(append(bytes.Clone(data), 1)), int64(len(data)), opts); err == nil {
			t.Fatal("Upload of a body longer than its size succeeded")
		}
		if obj, err := b.Stat(ctx, key); err != nil || obj.Exists {
			t.Errorf("Stat = %+v, %v; want absent", obj, err)
		}
	})
}

// cutReader reads r and calls cancel once at bytes have been read, as a killed process stops.
type cutReader struct {
	r      io.Reader
	at     int
	n      int
	cancel func()
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n >= c.at {
		c.cancel()
		time.Sleep(50 * time.Millisecond) // let the pieces in flight see it
		return 0, context.Canceled
	}
	p = p[:min(len(p), c.at-c.n)]
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
