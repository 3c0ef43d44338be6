package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/happy-turtle/oci-proxy/mirrors"
)

// DefaultPartSize is the size of one part of a multipart upload, and the size from which an
// upload is multipart.
const DefaultPartSize = 8 << 20

// abortTimeout bounds the abort of a failed multipart upload. It runs on a context of its own:
// the upload's context is often the reason it failed (a copy's deadline, a stopping sync), and an
// upload left unaborted keeps its parts, billed as storage, until a lifecycle rule removes them.
const abortTimeout = 30 * time.Second

// writeAttempts is how many times a failed upload request held in memory (the whole object
// below the part size, or a part resumed and sent again) is tried. Unlike Stat, a copy has time
// to retry.
const writeAttempts = 3

var _ mirrors.Writer = (*Backend)(nil)

// Put streams size bytes from body into key: Upload with the backend's part size and without
// Resume. Blobs of the part size or more go up as a multipart upload; a body that ends early,
// runs long or fails to read, or a ctx that ends, aborts the upload, so no partial object is left
// under key and no parts are left in the bucket. The abort has its own deadline (abortTimeout),
// so a Put cut off by its context still cleans up; only a process killed mid-upload leaves one
// behind (see docs/SYNC.md for the lifecycle rule that removes those).
func (b *Backend) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	_, err := b.Upload(ctx, key, body, size, UploadOptions{PartSize: b.partSize})
	return err
}

// abort aborts multipart upload id of key. S3 documents that a part still arriving when an upload is
// aborted can be stored anyway, so that an abort may have to be repeated to free everything: a
// part request cut off a moment ago may still be in the service's hands. So abort checks that
// the upload is gone (NoSuchUpload, 404) and tries again, a few times, until it is.
func (b *Backend) abort(ctx context.Context, key, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	var err error
	for attempt := range 4 {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 250 * time.Millisecond):
			case <-ctx.Done():
				return fmt.Errorf("multipart upload %s: %w", id, errors.Join(err, ctx.Err()))
			}
		}
		_, err = b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &b.bucket, Key: &key, UploadId: &id})
		if gone(err) {
			return nil
		}
		if err != nil {
			continue
		}
		_, err = b.client.ListParts(ctx, &s3.ListPartsInput{Bucket: &b.bucket, Key: &key, UploadId: &id})
		if gone(err) {
			return nil
		}
		if err == nil {
			err = errors.New("still listed after it was aborted")
		}
	}
	return fmt.Errorf("multipart upload %s: %w", id, err)
}

// gone reports whether err says that a multipart upload does not exist (NoSuchUpload, 404).
func gone(err error) bool {
	if _, ok := errors.AsType[*types.NoSuchUpload](err); ok {
		return true
	}
	re, ok := errors.AsType[*awshttp.ResponseError](err)
	return ok && re.HTTPStatusCode() == http.StatusNotFound
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

// DefaultParallelParts is how many parts of one Upload are in flight at once when
// UploadOptions.Parallel is zero: one streaming while the one before waits for its answer, so
// that the connection is not left idle between parts.
const DefaultParallelParts = 2

// maxParts is the most parts S3 accepts in one multipart upload.
const maxParts = 10000

// UploadOptions tune an Upload. The zero value uploads in DefaultPartSize parts, two at a time,
// and neither resumes nor keeps anything after a failure.
type UploadOptions struct {
	// PartSize is the size of each part, and the size from which the upload is multipart.
	// Zero: DefaultPartSize. S3 requires at least 5 MiB, and takes at most 10,000 parts: a
	// blob larger than 10,000 × PartSize goes up in parts of the next whole MiB that fits.
	PartSize int64
	// Parallel is how many parts are in flight at once: one is sent as the body is read, the
	// others wait for S3's answer. Zero: DefaultParallelParts.
	Parallel int
	// Progress, when set, is called with the number of bytes the HTTP client has just read
	// from a part's body, signing passes and retries included: a sign of life for a stall
	// watchdog, not a count of what is stored (UploadResult is).
	Progress func(n int64)
	// Resume continues the newest multipart upload of the key found in the bucket, keeping
	// each of its parts whose size fits PartSize and whose ETag is the MD5 of the bytes read
	// for it, and keeps an upload that fails on the service's side (a network failure, a
	// deadline, a cancellation) for the next Upload to continue. A body that fails or has the
	// wrong length still aborts the upload.
	Resume bool
}

// UploadResult is what an Upload did.
type UploadResult struct {
	Sent    int64 // bytes sent and acknowledged in this call
	Resumed int64 // bytes of parts already stored by an earlier upload, verified and kept
	Parts   int   // parts of the object (0: a single PutObject)
	// KeptParts counts the parts taken over from an earlier upload.
	KeptParts int
}

// Upload streams size bytes from body into key. A blob of PartSize or more goes up as a
// multipart upload: each part is sent as it is read from the body, holding none of it in memory
// (see streamed), the next one starting while the one before waits for its answer, up to
// Parallel in flight; Progress reports every byte the HTTP client reads; and with Resume, an
// upload cut off by a lost connection or a killed process is continued rather than started again
// (the parts it stored are read into memory one at a time, to be checked). A smaller blob is read
// into memory and sent in one PutObject, with retries. Before it completes an upload it has
// checked the body's length; after, the stored object's size. The object appears only when the
// upload completes.
func (b *Backend) Upload(ctx context.Context, key string, body io.Reader, size int64, o UploadOptions) (UploadResult, error) {
	if size < 0 {
		return UploadResult{}, fmt.Errorf("put %s on mirror %q: size %d", key, b.name, size)
	}
	if o.PartSize <= 0 {
		o.PartSize = DefaultPartSize
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallelParts
	}
	if size > maxParts*o.PartSize {
		// S3 takes at most maxParts parts: larger parts, in whole MiB, for such a blob.
		o.PartSize = ((size+maxParts-1)/maxParts + 1<<20 - 1) >> 20 << 20
	}
	client := s3.New(b.client.Options(), func(so *s3.Options) { so.RetryMaxAttempts = writeAttempts })
	u := &multipart{b: b, client: client, key: key, size: size, o: o}
	var res UploadResult
	var err error
	if size < o.PartSize {
		res, err = u.single(ctx, body)
	} else {
		res, err = u.run(ctx, body)
	}
	if err != nil {
		if cerr := context.Cause(ctx); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return res, fmt.Errorf("put %s on mirror %q: %w", key, b.name, err)
	}
	return res, nil
}

// multipart is one Upload.
type multipart struct {
	b      *Backend
	client *s3.Client
	key    string
	size   int64
	o      UploadOptions
}

// bodyError marks a failure of the body being uploaded, as opposed to one of the service: the
// upload is then aborted even with Resume, since what it stored so far may be the wrong bytes.
type bodyError struct{ err error }

func (e bodyError) Error() string { return e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

// readPart reads exactly len(p) bytes of the body, then (last) checks that nothing follows.
func readPart(r *exactReader, p []byte, last bool) error {
	if _, err := io.ReadFull(r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return bodyError{err}
	}
	if last {
		var one [1]byte
		if _, err := r.Read(one[:]); err != io.EOF {
			if err == nil {
				err = errLong
			}
			return bodyError{err}
		}
	}
	return nil
}

func (u *multipart) single(ctx context.Context, body io.Reader) (UploadResult, error) {
	buf := make([]byte, u.size)
	if err := readPart(&exactReader{ctx: ctx, r: body, left: u.size}, buf, true); err != nil {
		return UploadResult{}, err
	}
	_, err := u.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &u.b.bucket,
		Key:           &u.key,
		Body:          u.partBody(buf),
		ContentLength: aws.Int64(u.size),
		ContentType:   aws.String("application/octet-stream"),
	})
	if err != nil {
		return UploadResult{}, err
	}
	return UploadResult{Sent: u.size}, nil
}

// partBody is buf as a request body that reports what the HTTP client reads of it.
func (u *multipart) partBody(buf []byte) io.ReadSeeker {
	if u.o.Progress == nil {
		return bytes.NewReader(buf)
	}
	return &progressReader{r: bytes.NewReader(buf), f: u.o.Progress}
}

func (u *multipart) run(ctx context.Context, body io.Reader) (res UploadResult, err error) {
	id, have := "", map[int32]types.Part(nil)
	if u.o.Resume {
		// A bucket that cannot be listed, or an upload whose parts cannot be, is started anew:
		// resuming saves time, it is never needed for a correct copy.
		if id, have = u.existing(ctx); id == "" {
			have = nil
		}
	}
	if id == "" {
		out, err := u.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
			Bucket: &u.b.bucket, Key: &u.key, ContentType: aws.String("application/octet-stream"),
		})
		if err != nil {
			return res, fmt.Errorf("create multipart upload: %w", err)
		}
		id = *out.UploadId
	}
	defer func() {
		if err == nil {
			return
		}
		if _, body := errors.AsType[bodyError](err); !u.o.Resume || body {
			if aerr := u.b.abort(ctx, u.key, id); aerr != nil {
				err = fmt.Errorf("%w; and abort: %w", err, aerr)
			}
		}
	}()

	nparts := int((u.size + u.o.PartSize - 1) / u.o.PartSize)
	res.Parts = nparts
	etags := make([]string, nparts)
	slots := make(chan struct{}, u.o.Parallel)
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int64
	)
	r := &exactReader{ctx: pctx, r: body, left: u.size}
	var readErr error
	var kept []byte // a part an earlier upload stored, read to be checked
	for i := range nparts {
		select {
		case slots <- struct{}{}:
		case <-pctx.Done():
		}
		if pctx.Err() != nil {
			break
		}
		n := min(u.o.PartSize, u.size-int64(i)*u.o.PartSize)
		num := int32(i + 1)
		last := i == nparts-1
		if p, ok := have[num]; ok && aws.ToInt64(p.Size) == n {
			// Stored by an earlier upload: read into memory and kept if its bytes are the
			// same, sent from there otherwise (a part cut off when a process was killed may
			// be listed with the bytes that arrived).
			if kept == nil {
				kept = make([]byte, u.o.PartSize)
			}
			buf := kept[:n]
			if readErr = readPart(r, buf, last); readErr != nil {
				<-slots
				if pctx.Err() != nil {
					// The read stopped because the upload did (a failed part, ctx): that is
					// the error, not the body.
					readErr = nil
				}
				cancel(readErr)
				break
			}
			etag := aws.ToString(p.ETag)
			if !sameMD5(etag, buf) {
				out, err := u.client.UploadPart(pctx, &s3.UploadPartInput{
					Bucket: &u.b.bucket, Key: &u.key, UploadId: &id,
					PartNumber: &num, Body: u.partBody(buf), ContentLength: &n,
				})
				if err != nil {
					<-slots
					cancel(fmt.Errorf("part %d: %w", num, err))
					break
				}
				etag = aws.ToString(out.ETag)
				mu.Lock()
				sent += n
				mu.Unlock()
			} else {
				res.Resumed += n
				res.KeptParts++
			}
			etags[i] = etag
			<-slots
			continue
		}
		pr := &partReader{r: r, left: n, last: last, progress: u.o.Progress, done: make(chan struct{})}
		wg.Go(func() {
			defer func() { <-slots }()
			out, err := u.client.UploadPart(pctx, &s3.UploadPartInput{
				Bucket: &u.b.bucket, Key: &u.key, UploadId: &id,
				PartNumber: &num, Body: pr, ContentLength: &n,
			}, streamed)
			pr.end(nil) // for a request that failed before reading its body whole
			switch {
			case pr.err != nil:
				cancel(pr.err) // the body failed: that is the reason
			case err != nil:
				cancel(fmt.Errorf("part %d: %w", num, err))
			default:
				etags[num-1] = aws.ToString(out.ETag)
				mu.Lock()
				sent += n
				mu.Unlock()
			}
		})
		// The next part's bytes follow this one's: it starts once this body has been read, while
		// this part waits for its answer.
		select {
		case <-pr.done:
		case <-pctx.Done():
		}
		if pctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	res.Sent = sent
	if readErr != nil {
		return res, readErr
	}
	if err := context.Cause(pctx); err != nil {
		return res, err
	}
	parts := make([]types.CompletedPart, nparts)
	for i, e := range etags {
		parts[i] = types.CompletedPart{ETag: aws.String(e), PartNumber: aws.Int32(int32(i + 1))}
	}
	_, err = u.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &u.b.bucket, Key: &u.key, UploadId: &id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return res, fmt.Errorf("complete multipart upload: %w", err)
	}
	if err := u.verify(ctx); err != nil {
		return res, err
	}
	return res, nil
}

// streamed sends a part's body as it is read, not signed (UNSIGNED-PAYLOAD) and without a
// checksum, which would both need to read it whole before sending it, and tried once: a body
// read once cannot be sent again. The service still checks the length, TCP the bytes, and the
// completed object's size is checked; a part that fails fails the upload, which is kept for the
// next Upload to continue with Resume.
func streamed(o *s3.Options) {
	o.RetryMaxAttempts = 1
	o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
}

// partReader is one part of the body, as a part request reads it: exactly left bytes, then (last)
// a check that the body ends there. done is closed when it has been read whole or has failed, err
// then saying how the body failed (a bodyError).
type partReader struct {
	r        *exactReader
	left     int64
	last     bool
	progress func(int64)
	done     chan struct{}
	once     sync.Once
	err      error
}

func (p *partReader) end(err error) {
	p.once.Do(func() {
		p.err = err
		close(p.done)
	})
}

func (p *partReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, err := p.r.Read(b)
	p.left -= int64(n)
	if n > 0 && p.progress != nil {
		p.progress(int64(n))
	}
	if err == nil && p.left == 0 && p.last {
		// Look past the end: a body with more bytes is not the blob.
		var one [1]byte
		if _, err = p.r.Read(one[:]); err == io.EOF {
			err = nil
		} else if err == nil {
			err = errLong
		}
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		if p.r.ctx.Err() == nil {
			// The body failed, not the upload.
			p.end(bodyError{err})
		}
		return n, err
	}
	if p.left == 0 {
		p.end(nil)
		return n, io.EOF
	}
	return n, nil
}

// verify checks the completed object's size: parts taken over from an earlier upload were
// checked one by one, and this is the check of the whole.
func (u *multipart) verify(ctx context.Context) error {
	out, err := u.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &u.b.bucket, Key: &u.key})
	if err != nil {
		return fmt.Errorf("check the completed object: %w", err)
	}
	if got := aws.ToInt64(out.ContentLength); got != u.size {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer cancel()
		derr := u.b.Delete(dctx, u.key)
		return errors.Join(fmt.Errorf("the completed object has %d bytes, want %d", got, u.size), derr)
	}
	return nil
}

// existing returns the newest multipart upload of the key and its parts by number, or "".
func (u *multipart) existing(ctx context.Context) (string, map[int32]types.Part) {
	var (
		newest     string
		newestTime time.Time
		keyMarker  *string
		idMarker   *string
	)
	for range 100 { // pages of up to 1000 uploads under the key as a prefix
		out, err := u.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{
			Bucket: &u.b.bucket, Prefix: &u.key, KeyMarker: keyMarker, UploadIdMarker: idMarker,
		})
		if err != nil {
			return "", nil
		}
		for _, up := range out.Uploads {
			if aws.ToString(up.Key) != u.key {
				continue
			}
			if t := aws.ToTime(up.Initiated); newest == "" || t.After(newestTime) {
				newest, newestTime = aws.ToString(up.UploadId), t
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
		keyMarker, idMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
	if newest == "" {
		return "", nil
	}
	parts := map[int32]types.Part{}
	p := s3.NewListPartsPaginator(u.client, &s3.ListPartsInput{Bucket: &u.b.bucket, Key: &u.key, UploadId: &newest})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			var nsu *types.NoSuchUpload
			if errors.As(err, &nsu) {
				return "", nil // aborted or completed meanwhile
			}
			return newest, nil // continue it, sending every part again
		}
		for _, part := range out.Parts {
			parts[aws.ToInt32(part.PartNumber)] = part
		}
	}
	return newest, parts
}

// sameMD5 reports whether etag, as S3 returns it for a part, is the MD5 of data. An ETag that
// is not a plain MD5 (parts encrypted with SSE-KMS have others) never matches: such a part is
// sent again.
func sameMD5(etag string, data []byte) bool {
	etag = strings.Trim(etag, `"`)
	if len(etag) != 2*md5.Size {
		return false
	}
	sum := md5.Sum(data)
	return strings.EqualFold(etag, hex.EncodeToString(sum[:]))
}

// progressReader reports every byte read through it.
type progressReader struct {
	r *bytes.Reader
	f func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.f(int64(n))
	}
	return n, err
}

func (p *progressReader) Seek(off int64, whence int) (int64, error) { return p.r.Seek(off, whence) }
