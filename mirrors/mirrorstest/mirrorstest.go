// Package mirrorstest checks an implementation of mirrors.Writer against the contract that
// `oci-proxy sync` relies on, the way testing/fstest checks an fs.FS. It is for the tests of the
// provider packages (mirrors/s3, mirrors/gcs), run against a real or emulated storage service; it
// knows nothing of any provider, and nothing outside tests imports it.
package mirrorstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/happy-turtle/oci-proxy/mirrors"
)

// A Case is one Put for TestWriter: Size random bytes, handed over by Body.
type Case struct {
	Name string
	Size int
	// Body returns what Put reads, given the Size bytes of the blob. Nil means the blob itself.
	// TestWriter hides every method of the reader but Read.
	Body func(data []byte) io.Reader
	// WantErr says that Put must fail (the body is not the blob) and leave no object behind.
	WantErr bool
}

// cases are the Puts that TestWriter runs on every Writer: blobs small enough for any single
// request, written whole, and bodies that end early, run long, or fail to read partway or at
// their end.
var cases = []Case{
	{Name: "small", Size: 4096},
	{Name: "empty", Size: 0},
	{Name: "short body", Size: 4096, WantErr: true,
		Body: func(d []byte) io.Reader { return bytes.NewReader(d[:100]) }},
	{Name: "long body", Size: 4096, WantErr: true,
		Body: func(d []byte) io.Reader { return io.MultiReader(bytes.NewReader(d), strings.NewReader("x")) }},
	{Name: "failing body", Size: 4096, WantErr: true,
		Body: func(d []byte) io.Reader {
			return io.MultiReader(bytes.NewReader(d[:100]), iotest.ErrReader(io.ErrClosedPipe))
		}},
	{Name: "body failing at its end", Size: 4096, WantErr: true,
		Body: func(d []byte) io.Reader {
			return io.MultiReader(bytes.NewReader(d), iotest.ErrReader(io.ErrClosedPipe))
		}},
}

// TestWriter runs its own cases and then extra (a provider's own sizes, such as one over its
// part or chunk size) through w, each in a subtest of t named after the case, under a key of its
// own in the shared layout (blobs/sha256/<hex>). Every successful Put must be read back byte for
// byte, reported by Stat with its size, and gone after Delete; every failing one must return an
// error and leave no object. Finally, Delete of a key that was never written must succeed.
//
// read fetches key from the storage service past w (as its owner, or through a signed URL) and
// reports whether it is there; it fails t when it cannot tell.
func TestWriter(t *testing.T, w mirrors.Writer, read func(t *testing.T, key string) ([]byte, bool), extra ...Case) {
	t.Helper()
	for i, tt := range append(cases[:len(cases):len(cases)], extra...) {
		t.Run(tt.Name, func(t *testing.T) {
			key := "blobs/sha256/" + strings.Repeat(string(rune('a'+i)), 64)
			data := make([]byte, tt.Size)
			if _, err := rand.Read(data); err != nil {
				t.Fatal(err)
			}
			var body io.Reader = bytes.NewReader(data)
			if tt.Body != nil {
				body = tt.Body(data)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := w.Put(ctx, key, onlyReader{body}, int64(len(data)))
			if tt.WantErr {
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
			if !ok || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes (found %v), want the %d written", len(got), ok, len(data))
			}
			obj, err := w.Stat(ctx, key)
			if err != nil || !obj.Exists || obj.Size != int64(len(data)) {
				t.Errorf("Stat = %+v, %v; want present with size %d", obj, err, len(data))
			}
			if err := w.Delete(ctx, key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if obj, err := w.Stat(ctx, key); err != nil || obj.Exists {
				t.Errorf("Stat after Delete = %+v, %v; want absent", obj, err)
			}
		})
	}

	t.Run("Delete of a missing key", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Delete(ctx, "blobs/sha256/"+strings.Repeat("0", 64)); err != nil {
			t.Errorf("Delete: %v, want nil", err)
		}
	})
}

// onlyReader hides every method but Read. A bytes.Reader is also a Seeker, which an SDK would use
// to learn the length and rewind; Put must stream what an upstream download hands it.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
