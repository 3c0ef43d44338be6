package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Install commands of the object-storage servers, shown when one is missing.
const (
	VersityGWInstall = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"
	FakeGCSInstall   = "go install github.com/fsouza/fake-gcs-server@v1.56.1"
)

// Loopback hosts of the object-storage servers: each its own "host", as in production, so that a
// redirect to a mirror crosses hosts.
const (
	S3Host  = "127.0.0.3"
	GCSHost = "127.0.0.4"
)

// S3Server is a running versitygw: an S3 service that verifies SigV4 signatures, presigned URLs
// included, with one root user.
type S3Server struct {
	Endpoint string // http://127.0.0.3:PORT, for path-style requests
	Host     string // 127.0.0.3:PORT
	Access   string // root access key ID
	Secret   string // root secret access key
	Region   string // the region signatures must name
	Dir      string // the posix backend's root: one directory per bucket
	Proc     *Process
	client   *s3.Client
	start    func(t testing.TB) *Process // starts versitygw again with the same address, keys and data
}

// StartVersityGW starts versitygw on S3Host with its posix backend in dir (the filesystem must
// support extended attributes) and a random root key pair, and waits until it answers.
func StartVersityGW(t testing.TB, dir string) *S3Server {
	t.Helper()
	bin := Need(t, "versitygw", VersityGWInstall)
	addr := Addr(t, S3Host)
	s := &S3Server{
		Endpoint: "http://" + addr,
		Host:     addr,
		Access:   "AK" + randomHex(t, 8),
		Secret:   randomHex(t, 20),
		Region:   "us-east-1",
		Dir:      dir,
	}
	// The keys go through the environment, not argv, so that they stay out of process listings.
	env := []string{"ROOT_ACCESS_KEY_ID=" + s.Access, "ROOT_SECRET_ACCESS_KEY=" + s.Secret, "VGW_REGION=" + s.Region}
	s.start = func(t testing.TB) *Process {
		p := Start(t, "versitygw", env, bin, "--port", addr, "--quiet", "posix", dir)
		WaitHTTP(t, p, s.Endpoint+"/")
		return p
	}
	s.Proc = s.start(t)
	s.client = s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.Access, s.Secret, ""),
		HTTPClient:   &http.Client{Timeout: 30 * time.Second},
	})
	return s
}

// Restart stops versitygw and starts it again on the same address with the same keys and data,
// as an operator restarting a failed service would.
func (s *S3Server) Restart(t testing.TB) {
	t.Helper()
	s.Proc.Stop()
	s.Proc = s.start(t)
}

// Client returns an S3 client authenticated as the root user.
func (s *S3Server) Client() *s3.Client { return s.client }

// CreateBucket creates bucket as the root user.
func (s *S3Server) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatalf("versitygw: create bucket %s: %v", bucket, err)
	}
}

// PutObject stores data under key in bucket as the root user.
func (s *S3Server) PutObject(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &bucket,
		Key:           &key,
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		t.Fatalf("versitygw: put %s/%s: %v", bucket, key, err)
	}
}

// CredentialsFile writes the root user's keys as profile in an AWS shared credentials file in a
// temporary directory and returns its path.
func (s *S3Server) CredentialsFile(t testing.TB, profile string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "credentials")
	body := fmt.Sprintf("[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", profile, s.Access, s.Secret)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// GCSServer is a running fake-gcs-server with in-memory storage. It serves the JSON API and
// path-style XML downloads, and ignores signatures entirely.
type GCSServer struct {
	Host string // 127.0.0.4:PORT, the value for STORAGE_EMULATOR_HOST
	URL  string // http://127.0.0.4:PORT
	Proc *Process
}

// StartFakeGCS starts fake-gcs-server on GCSHost over plain HTTP and waits until it answers. Its
// public host is its own address, so that signed URLs pointing at it are served.
func StartFakeGCS(t testing.TB) *GCSServer {
	t.Helper()
	bin := Need(t, "fake-gcs-server", FakeGCSInstall)
	port := FreePort(t, GCSHost)
	host := GCSHost + ":" + strconv.Itoa(port)
	g := &GCSServer{Host: host, URL: "http://" + host}
	g.Proc = Start(t, "fake-gcs-server", nil, bin,
		"-scheme", "http", "-host", GCSHost, "-port", strconv.Itoa(port),
		"-backend", "memory", "-public-host", host, "-log-level", "warn")
	WaitHTTP(t, g.Proc, g.URL+"/storage/v1/b")
	return g
}

// CreateBucket creates bucket through the JSON API.
func (g *GCSServer) CreateBucket(t testing.TB, bucket string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": bucket})
	g.do(t, http.MethodPost, g.URL+"/storage/v1/b?project=test", "application/json", body)
}

// Upload stores data under key in bucket through the JSON API's simple upload.
func (g *GCSServer) Upload(t testing.TB, bucket, key string, data []byte) {
	t.Helper()
	u := g.URL + "/upload/storage/v1/b/" + url.PathEscape(bucket) + "/o?uploadType=media&name=" + url.QueryEscape(key)
	g.do(t, http.MethodPost, u, "application/octet-stream", data)
}

func (g *GCSServer) do(t testing.TB, method, u, contentType string, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("fake-gcs-server: %s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		t.Fatalf("fake-gcs-server: %s %s: %s: %s", method, u, resp.Status, out)
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
