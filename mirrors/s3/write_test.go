package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
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
	if ids := uploads(t); len(ids) != 0 {
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
