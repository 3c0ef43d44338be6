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
	return b.finish(ctx, cancel, key, w, body, size)
}

// finish copies exactly size bytes of body into w and closes it, or cancels the upload (cancel
// ends w's context) so that no object is created.
func (b *Backend) finish(ctx context.Context, cancel context.CancelFunc, key string, w *storage.Writer, body io.Reader, size int64) error {
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
		if cerr := context.Cause(ctx); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
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

// UploadOptions tune an Upload. The zero value sends the blob in one streamed request.
type UploadOptions struct {
	// ChunkSize, when set, sends the blob in chunks of this size (rounded up to a multiple of
	// 256 KiB), each held in memory so that the client can send it again after a transient
	// error. Zero: one request that streams the whole blob and holds none of it, at the cost
	// of those retries: a failed upload fails the copy, which the next sync run starts again.
	ChunkSize int
	// Progress, when set, is called with the number of bytes the upload has just taken from
	// the body: a sign of life for a stall watchdog. Streamed in one request, those are bytes
	// sent; in chunks, a chunk in flight shows none until it is acknowledged, so a watchdog's
	// patience must cover one chunk at the slowest rate it accepts.
	Progress func(n int64)
}

// chunkQuantum is the granularity of resumable upload chunks.
const chunkQuantum = 256 << 10

// Upload is Put with a chunk size and progress. The object appears only when the upload
// completes, as with Put. An upload is not continued by a later process: the client keeps its
// resumable session to itself (see docs/SYNC.md).
func (b *Backend) Upload(ctx context.Context, key string, body io.Reader, size int64, o UploadOptions) error {
	if size < 0 {
		return fmt.Errorf("put %s on mirror %q: size %d", key, b.name, size)
	}
	chunk := 0
	if o.ChunkSize > 0 {
		// The client allocates a whole chunk per upload: a small blob needs only its own size.
		chunk = int(min(int64(o.ChunkSize), max(size, 1)))
		chunk = (chunk + chunkQuantum - 1) / chunkQuantum * chunkQuantum
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := b.bucket.Object(key).NewWriter(ctx)
	w.ChunkSize = chunk
	w.ContentType = "application/octet-stream"
	w.ChunkRetryDeadline = time.Minute
	if o.Progress != nil {
		body = &progressReader{r: body, f: o.Progress}
	}
	return b.finish(ctx, cancel, key, w, body, size)
}

// progressReader reports every byte read through it.
type progressReader struct {
	r io.Reader
	f func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.f(int64(n))
	}
	return n, err
}
