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
	// ChunkSize, when set, sends the blob (or each piece) in chunks of this size (rounded up
	// to a multiple of 256 KiB), each held in memory so that the client can send it again
	// after a transient error. Zero: one request that streams the whole blob and holds none
	// of it, at the cost of those retries: a failed upload fails the copy, which the next sync
	// run starts again (or, in pieces, continues).
	ChunkSize int
	// PieceSize, when set, sends a blob larger than it in pieces of this size, each a
	// temporary object under TempPrefix, streamed in a request of its own, and composes them
	// into the key at the end (GCS's compose, through composites of 32 when there are more):
	// an upload cut off leaves its finished pieces, which a later Upload with Resume keeps
	// rather than sends again. The key holds nothing until the compose, which is checked
	// against the CRC32C of every byte read, and the temporary objects are deleted once the
	// blob is composed or when the body fails. Zero: one upload, which no later one continues.
	PieceSize int64
	// TempPrefix is where the temporary objects go: TempPrefix + the key's last element + "/"
	// + the piece size + "/" + the piece's number. Required with PieceSize.
	TempPrefix string
	// Parallel is how many pieces are in flight at once: one streaming as the body is read,
	// the others being finished. Zero: one.
	Parallel int
	// Resume keeps the pieces an earlier Upload of the same key and piece size stored, and
	// keeps this upload's when it fails on the service's side (a network failure, a stall, a
	// cancellation) for the next Upload to continue. A body that fails or has the wrong
	// length still deletes them.
	Resume bool
	// Progress, when set, is called with the number of bytes the upload has just taken from
	// the body: a sign of life for a stall watchdog. Streamed in one request, those are bytes
	// sent; in chunks, a chunk in flight shows none until it is acknowledged, so a watchdog's
	// patience must cover one chunk at the slowest rate it accepts.
	Progress func(n int64)
}

// chunkQuantum is the granularity of resumable upload chunks.
const chunkQuantum = 256 << 10

// chunk is the writer's ChunkSize for an upload of size bytes.
func (o UploadOptions) chunk(size int64) int {
	if o.ChunkSize <= 0 {
		return 0
	}
	// The client allocates a whole chunk per upload: a small blob needs only its own size.
	c := int(min(int64(o.ChunkSize), max(size, 1)))
	return (c + chunkQuantum - 1) / chunkQuantum * chunkQuantum
}

// Upload is Put with a chunk size and progress, and (PieceSize) in pieces that a later Upload
// continues. The object appears only when the upload completes, as with Put. It returns the
// bytes of the blob that it did not send because an earlier Upload had stored them.
func (b *Backend) Upload(ctx context.Context, key string, body io.Reader, size int64, o UploadOptions) (int64, error) {
	if size < 0 {
		return 0, fmt.Errorf("put %s on mirror %q: size %d", key, b.name, size)
	}
	if o.PieceSize > 0 && size > o.PieceSize {
		if o.TempPrefix == "" {
			return 0, fmt.Errorf("put %s on mirror %q: pieces without a TempPrefix", key, b.name)
		}
		p := &pieced{b: b, key: key, size: size, o: o, dir: pieceDir(o.TempPrefix, key, o.PieceSize)}
		resumed, err := p.run(ctx, body)
		if err != nil {
			if cerr := context.Cause(ctx); cerr != nil && !errors.Is(err, cerr) {
				err = fmt.Errorf("%w: %w", cerr, err)
			}
			return resumed, fmt.Errorf("put %s on mirror %q: %w", key, b.name, err)
		}
		return resumed, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := b.bucket.Object(key).NewWriter(ctx)
	w.ChunkSize = o.chunk(size)
	w.ContentType = "application/octet-stream"
	w.ChunkRetryDeadline = time.Minute
	if o.Progress != nil {
		body = &progressReader{r: body, f: o.Progress}
	}
	return 0, b.finish(ctx, cancel, key, w, body, size)
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
