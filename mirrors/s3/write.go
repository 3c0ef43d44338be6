package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/happy-turtle/oci-proxy/mirrors"
)

// DefaultPartSize is the size of one part of a multipart upload, and the size from which an
// upload is multipart. A Put holds at most (uploadConcurrency+1) parts in memory, whatever the
// size of the blob.
const DefaultPartSize = 8 << 20

// uploadConcurrency is how many parts of one Put are in flight. The sync command already copies
// several blobs at once, and its upstream download paces each one.
const uploadConcurrency = 2

// abortTimeout bounds the abort of a failed multipart upload. It runs on a context of its own:
// the upload's context is often the reason it failed (a copy's deadline, a stopping sync), and an
// upload left unaborted keeps its parts, billed as storage, until a lifecycle rule removes them.
const abortTimeout = 30 * time.Second

// writeAttempts is how many times a failed upload request (one part, or the whole object below
// DefaultPartSize) is tried. Unlike Stat, a copy has time to retry: its parts are in memory.
const writeAttempts = 3

var _ mirrors.Writer = (*Backend)(nil)

// newUploader builds the transfer manager that Put streams through: multipart for anything of
// partSize or more, so that no blob is held in memory whole, and a single PutObject below.
// Every request body is a part buffered in memory, so its length and checksum are known before it
// is sent, which S3 requires of a body over plain HTTP.
func newUploader(client *s3.Client, partSize int64) *transfermanager.Client {
	if partSize <= 0 {
		partSize = DefaultPartSize
	}
	w := s3.New(client.Options(), func(o *s3.Options) { o.RetryMaxAttempts = writeAttempts })
	return transfermanager.New(w, func(o *transfermanager.Options) {
		o.PartSizeBytes = partSize
		o.MultipartUploadThreshold = partSize
		o.Concurrency = uploadConcurrency
		// Zero would abort on the upload's context, which is dead when it is what failed.
		o.FailTimeout = abortTimeout
	})
}

// Put streams size bytes from body into key. Blobs of DefaultPartSize or more go up as a
// multipart upload; a body that ends early, runs long or fails to read, or a ctx that ends,
// aborts the upload, so no partial object is left under key and no parts are left in the bucket.
// The abort has its own deadline (abortTimeout), so a Put cut off by its context still cleans up;
// only a process killed mid-upload leaves one behind (see docs/SYNC.md for the lifecycle rule
// that removes those).
func (b *Backend) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	if size < 0 {
		return fmt.Errorf("put %s on mirror %q: size %d", key, b.name, size)
	}
	r := &exactReader{ctx: ctx, r: body, left: size}
	_, err := b.uploader.UploadObject(ctx, &transfermanager.UploadObjectInput{
		Bucket:        &b.bucket,
		Key:           &key,
		Body:          r,
		ContentLength: aws.Int64(size),
		ContentType:   aws.String("application/octet-stream"),
	})
	if err == nil {
		return nil
	}
	if mu, ok := errors.AsType[transfermanager.MultipartUploadError](err); ok && mu.UploadID() != "" {
		if aerr := b.abort(ctx, key, mu.UploadID()); aerr != nil {
			err = fmt.Errorf("%w; and abort: %w", err, aerr)
		}
	}
	// The transfer manager reports a cancellation as text when its own abort failed too: keep
	// it matchable.
	if cerr := context.Cause(ctx); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	return fmt.Errorf("put %s on mirror %q: %w", key, b.name, err)
}

// abort aborts multipart upload id of key once more after the transfer manager's own abort:
// that one may have failed, and S3 documents that a part still arriving when an upload is
// aborted can be stored anyway, so that an abort may have to be repeated to free everything.
// An upload that is already gone (NoSuchUpload, 404) is done.
func (b *Backend) abort(ctx context.Context, key, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.bucket, Key: &key, UploadId: &id})
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*types.NoSuchUpload](err); ok {
		return nil
	}
	if re, ok := errors.AsType[*awshttp.ResponseError](err); ok && re.HTTPStatusCode() == http.StatusNotFound {
		return nil
	}
	return fmt.Errorf("multipart upload %s: %w", id, err)
}

// Close closes the idle connections of the backend's HTTP client, so that a replaced
// configuration's backend lets go of them at once rather than when they time out. That takes a
// client that can be told to, such as an *http.Client; the SDK's buildable client keeps its
// transport to itself, and its connections close on their idle timeout. Calls in flight finish,
// and the Backend stays usable: a later call dials again.
func (b *Backend) Close() error {
	if c, ok := b.client.Options().HTTPClient.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	return nil
}

// Delete removes key. S3 answers a missing key with success; a 404 (from S3-compatible services
// that say so) is not an error either.
func (b *Backend) Delete(ctx context.Context, key string) error {
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.bucket, Key: &key})
	if err != nil {
		var re *awshttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
			return nil
		}
		return fmt.Errorf("delete %s on mirror %q: %w", key, b.name, err)
	}
	return nil
}

// exactReader passes on exactly left bytes of r and then io.EOF, and fails when r ends earlier or
// holds more: an upload of the wrong length must fail before it completes. It also fails once ctx
// ends, so that a slow body does not keep a cancelled upload reading.
type exactReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
}

var errLong = errors.New("body is longer than its size")

func (e *exactReader) Read(p []byte) (int, error) {
	if err := e.ctx.Err(); err != nil {
		return 0, err
	}
	if e.left == 0 {
		// Look one byte further: a body with more than size bytes is not the blob.
		var one [1]byte
		n, err := io.ReadFull(e.r, one[:])
		if n > 0 {
			return 0, errLong
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, io.EOF
		}
		return 0, err
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, io.ErrUnexpectedEOF
	}
	if err == io.EOF {
		err = nil // the next call checks for trailing bytes
	}
	return n, err
}
