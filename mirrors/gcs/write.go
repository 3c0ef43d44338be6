package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"cloud.google.com/go/storage"

	"github.com/happy-turtle/oci-proxy/mirrors"
)

// chunkSize is how much of a blob one Put holds in memory: the resumable upload sends it in
// pieces of this size, so that no blob is held whole.
const chunkSize = 8 << 20

var _ mirrors.Writer = (*Backend)(nil)

// Put streams size bytes from body into key with a resumable upload. The object appears only
// when the upload completes: a body that ends early, runs long or fails to read cancels it, and
// key keeps whatever it held before.
//
// It writes with the client's identity: the key file (credentials_file) or Application Default
// Credentials. A public bucket without a key file is read anonymously and cannot be written.
func (b *Backend) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	if size < 0 {
		return fmt.Errorf("put %s on mirror %q: size %d", key, b.name, size)
	}
	// Cancelling the writer's context is the only way to abandon an upload without creating the
	// object.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := b.bucket.Object(key).NewWriter(ctx)
	w.ChunkSize = chunkSize
	w.ContentType = "application/octet-stream"
	// Uploads are idempotent (same key, same bytes), so a failed chunk may be sent again.
	w.ChunkRetryDeadline = time.Minute
	n, err := io.Copy(w, io.LimitReader(body, size))
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		// Read past the end: a body with more bytes is not the blob, and a body whose reader
		// fails at its end (a digest check, say) must not be stored either.
		var one [1]byte
		m, rerr := io.ReadFull(body, one[:])
		switch {
		case m > 0:
			err = errors.New("body is longer than its size")
		case rerr != io.EOF:
			err = rerr
		}
	}
	if err != nil {
		cancel()
		_ = w.Close() // reports the cancellation; the error that matters is err
		return fmt.Errorf("put %s on mirror %q: %w", key, b.name, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("put %s on mirror %q: %w", key, b.name, err)
	}
	return nil
}

// Delete removes key; a missing key is not an error.
func (b *Backend) Delete(ctx context.Context, key string) error {
	err := b.bucket.Object(key).Delete(ctx)
	if err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
		return fmt.Errorf("delete %s on mirror %q: %w", key, b.name, err)
	}
	return nil
}
