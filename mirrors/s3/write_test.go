package s3

import (
	"bytes"
	"context"
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
