package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/mirrors/mirrorstest"
)

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
	b := newBackend(t, Config{
		Name: "versity", Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint,
		CredentialsFile: srv.CredentialsFile(t, "default"),
	}, Options{PartSize: 5 << 20})

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

	// Multipart sizes: the part size is 5 MiB.
	mirrorstest.TestWriter(t, secretFree{b, t, srv.Secret}, read, []mirrorstest.Case{
		{Name: "multipart 12 MiB", Size: 12 << 20},
		{Name: "short multipart body", Size: 12 << 20, WantErr: true,
			Body: func(d []byte) io.Reader { return bytes.NewReader(d[:11<<20]) }},
		{Name: "failing multipart body", Size: 12 << 20, WantErr: true,
			Body: func(d []byte) io.Reader {
				return io.MultiReader(bytes.NewReader(d[:7<<20]), iotest.ErrReader(io.ErrClosedPipe))
			}},
	}...)
}

// secretFree fails t when an error from Put contains the secret key: errors end up in logs and
// sync reports.
type secretFree struct {
	mirrors.Writer
	t      *testing.T
	secret string
}

func (s secretFree) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	err := s.Writer.Put(ctx, key, body, size)
	if err != nil && strings.Contains(err.Error(), s.secret) {
		s.t.Errorf("Put %s: error contains the secret key: %v", key, err)
	}
	return err
}

// TestVersityGWPutCancelled stops a multipart Put partway, as a copy's deadline or a stopping
// sync does: the upload must be aborted although the Put's context is dead, so that the bucket
// keeps no parts (which S3 bills for) and no object.
func TestVersityGWPutCancelled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw")
	}
	testenv.IsolateAWS(t)
	srv := testenv.StartVersityGW(t, t.TempDir())
	const bucket = "oci-proxy-cancel"
	srv.CreateBucket(t, bucket)
	b := newBackend(t, Config{
		Name: "versity", Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint,
		CredentialsFile: srv.CredentialsFile(t, "default"),
	}, Options{PartSize: 5 << 20})
	uploads := func(t *testing.T) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := srv.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: new(bucket)})
		if err != nil {
			t.Fatalf("list multipart uploads: %v", err)
		}
		var ids []string
		for _, u := range out.Uploads {
			ids = append(ids, *u.Key+" "+*u.UploadId)
		}
		return ids
	}

	const size = 24 << 20
	key := "blobs/sha256/" + strings.Repeat("c", 64)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- b.Put(ctx, key, &slowReader{left: size, chunk: 256 << 10, every: 10 * time.Millisecond}, size)
	}()

	// Cancelled once S3 holds an upload with a part or more, while the rest of the body trickles.
	deadline := time.Now().Add(30 * time.Second)
	for len(uploads(t)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no multipart upload started within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put: %v, want an error wrapping context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Put did not return within 30s of its context ending")
	}
	// A part still arriving when the abort lands may be stored anyway (S3 documents this), which
	// is why Put aborts twice; the service may take a moment to drop what it had.
	ids := uploads(t)
	for wait := time.Now().Add(5 * time.Second); len(ids) != 0 && time.Now().Before(wait); ids = uploads(t) {
		time.Sleep(100 * time.Millisecond)
	}
	if len(ids) != 0 {
		t.Errorf("multipart uploads left behind: %v", ids)
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer hcancel()
	if obj, err := b.Stat(hctx, key); err != nil || obj.Exists {
		t.Errorf("Stat after the cancelled Put = %+v, %v; want absent", obj, err)
	}
}

// slowReader yields left zero bytes, chunk bytes every interval, whatever its reader's context:
// an upstream that is slow but healthy.
type slowReader struct {
	left, chunk int
	every       time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.every)
	n := min(len(p), s.chunk, s.left)
	clear(p[:n])
	s.left -= n
	return n, nil
}

// TestVersityGWUploadResume cuts an Upload off after some of its parts are stored, as a killed
// process or a lost connection does, and uploads again: the parts already stored are kept when
// their bytes are the blob's, sent again when they are not, and the object is whole either way.
// A body that fails aborts the upload even with Resume.
func TestVersityGWUploadResume(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw")
	}
	testenv.IsolateAWS(t)
	srv := testenv.StartVersityGW(t, t.TempDir())
	const bucket = "oci-proxy-resume"
	srv.CreateBucket(t, bucket)
	b := newBackend(t, Config{
		Name: "versity", Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint,
		CredentialsFile: srv.CredentialsFile(t, "default"),
	}, Options{})
	const part, size = 5 << 20, 23 << 20 // five parts, the last short
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7 % 251)
	}
	uploads := func(t *testing.T, key string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := srv.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: new(bucket), Prefix: &key})
		if err != nil {
			t.Fatalf("list multipart uploads: %v", err)
		}
		return len(out.Uploads)
	}
	// cut uploads the first parts of body and is then cancelled while it waits for the rest.
	cut := func(t *testing.T, key string, body []byte) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		pr, pw := io.Pipe()
		go func() {
			pw.Write(body[:3*part+1])
			<-ctx.Done()
			pw.CloseWithError(ctx.Err())
		}()
		var stored atomic.Int64
		done := make(chan error, 1)
		go func() {
			_, err := b.Upload(ctx, key, pr, size, UploadOptions{PartSize: part, Resume: true, Progress: func(n int64) { stored.Add(n) }})
			done <- err
		}()
		deadline := time.Now().Add(30 * time.Second)
		for !partsStored(t, srv, bucket, key, 3) {
			if time.Now().After(deadline) {
				t.Fatal("three parts not stored within 30s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("cut Upload: %v, want context.Canceled", err)
		}
		if stored.Load() == 0 {
			t.Error("Progress was never called")
		}
		if uploads(t, key) != 1 {
			t.Fatalf("the cut upload was not kept for resuming")
		}
	}
	check := func(t *testing.T, key string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := srv.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: new(bucket), Key: &key})
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		defer out.Body.Close()
		got, err := io.ReadAll(out.Body)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("stored object: %d bytes, equal %v, %v", len(got), bytes.Equal(got, data), err)
		}
		if n := uploads(t, key); n != 0 {
			t.Errorf("%d multipart uploads left for %s", n, key)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("same bytes", func(t *testing.T) {
		key := "blobs/sha256/" + strings.Repeat("a", 64)
		cut(t, key, data)
		res, err := b.Upload(ctx, key, bytes.NewReader(data), size, UploadOptions{PartSize: part, Resume: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.KeptParts < 3 || res.Resumed != int64(res.KeptParts)*part || res.Sent != size-res.Resumed || res.Parts != 5 {
			t.Errorf("resumed Upload = %+v; want at least 3 of 5 parts kept and the rest sent", res)
		}
		check(t, key)
	})
	t.Run("other bytes", func(t *testing.T) {
		key := "blobs/sha256/" + strings.Repeat("b", 64)
		other := bytes.Clone(data)
		other[part+10] ^= 0xff // the second part differs
		cut(t, key, other)
		res, err := b.Upload(ctx, key, bytes.NewReader(data), size, UploadOptions{PartSize: part, Resume: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.KeptParts < 2 || res.Sent < 2*part {
			t.Errorf("resumed Upload = %+v; want parts 1 and 3 kept, part 2 sent again", res)
		}
		check(t, key)
	})
	t.Run("failing body aborts", func(t *testing.T) {
		key := "blobs/sha256/" + strings.Repeat("d", 64)
		body := io.MultiReader(bytes.NewReader(data[:2*part+5]), iotest.ErrReader(io.ErrClosedPipe))
		if _, err := b.Upload(ctx, key, body, size, UploadOptions{PartSize: part, Resume: true}); !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("Upload of a failing body: %v", err)
		}
		if n := uploads(t, key); n != 0 {
			t.Errorf("%d multipart uploads kept after a failing body", n)
		}
		if obj, err := b.Stat(ctx, key); err != nil || obj.Exists {
			t.Errorf("Stat = %+v, %v; want absent", obj, err)
		}
	})
	t.Run("small blob", func(t *testing.T) {
		key := "blobs/sha256/" + strings.Repeat("e", 64)
		res, err := b.Upload(ctx, key, bytes.NewReader(data[:1000]), 1000, UploadOptions{PartSize: part, Resume: true})
		if err != nil || res.Sent != 1000 || res.Parts != 0 {
			t.Fatalf("Upload of 1000 bytes = %+v, %v", res, err)
		}
	})
}

// partsStored reports whether the one multipart upload of key holds at least n parts.
func partsStored(t *testing.T, srv *testenv.S3Server, bucket, key string, n int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ups, err := srv.Client().ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket, Prefix: &key})
	if err != nil || len(ups.Uploads) != 1 {
		return false
	}
	parts, err := srv.Client().ListParts(ctx, &s3.ListPartsInput{Bucket: &bucket, Key: &key, UploadId: ups.Uploads[0].UploadId})
	return err == nil && len(parts.Parts) >= n
}
