package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/happy-turtle/oci-proxy/mirrors"
)

// DefaultPartSize is the size of one part of a multipart upload, and the size from which an
// upload is multipart. A Put holds at most (uploadConcurrency+1) parts in memory, whatever the
// size of the blob.
const DefaultPartSize = 8 << 20

// uploadConcurrency is how many parts of one Put are in flight. The sync command already copies
// several blobs at once, and its upstream download paces each one.
const uploadConcurrency = 2

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
	})
}

// Put streams size bytes from body into key. Blobs of DefaultPartSize or more go up as a
// multipart upload; a body that ends early, runs long or fails to read aborts the upload, so no
// partial object is left under key.
func (b *Backend) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	if size < 0 {
		return fmt.Errorf("put %s on mirror %q: size %d", key, b.name, size)
	}
	r := &exactReader{r: body, left: size}
	_, err := b.uploader.UploadObject(ctx, &transfermanager.UploadObjectInput{
		Bucket:        &b.bucket,
		Key:           &key,
		Body:          r,
		ContentLength: aws.Int64(size),
		ContentType:   aws.String("application/octet-stream"),
	})
	if err != nil {
		return fmt.Errorf("put %s on mirror %q: %w", key, b.name, err)
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
// holds more: an upload of the wrong length must fail before it completes.
type exactReader struct {
	r    io.Reader
	left int64
}

var errLong = errors.New("body is longer than its size")

func (e *exactReader) Read(p []byte) (int, error) {
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
