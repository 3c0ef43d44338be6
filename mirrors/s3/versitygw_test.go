package s3

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/mirrors"
)

// TestVersityGW runs the backend against a real S3 implementation that verifies SigV4, presigned
// URLs included, and fetches the URLs with a client that holds no credentials, as a container
// client following a redirect does.
func TestVersityGW(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw")
	}
	testenv.IsolateAWS(t)
	srv := testenv.StartVersityGW(t, t.TempDir())
	const bucket = "oci-proxy-test"
	srv.CreateBucket(t, bucket)
	blob := bytes.Repeat([]byte("layer data "), 1000)
	srv.PutObject(t, bucket, testKey, blob)

	b := newBackend(t, Config{
		Name: "versity", Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint,
		CredentialsFile: srv.CredentialsFile(t, "default"),
	}, Options{})
	// Without following redirects: a redirect would hide which URL was answered.
	anon := testenv.NoRedirectClient(t, "")
	fetch := func(t *testing.T, method string, u *url.URL, host string) testenv.Answer {
		t.Helper()
		req := testenv.NewRequest(t, method, u.String(), nil)
		if host != "" {
			req.Host = host
		}
		return testenv.Send(t, anon, req)
	}

	t.Run("Stat", func(t *testing.T) {
		tests := []struct {
			key      string
			want     bool
			wantSize int64
		}{
			{key: testKey, want: true, wantSize: int64(len(blob))},
			{key: "blobs/sha256/" + strings.Repeat("0", 64), want: false, wantSize: -1},
			{key: "blobs/sha256/", want: false, wantSize: -1},
		}
		for _, tt := range tests {
			t.Run(tt.key, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				obj, err := b.Stat(ctx, tt.key)
				if err != nil {
					t.Fatalf("Stat: %v", err)
				}
				if obj.Exists != tt.want || obj.Size != tt.wantSize {
					t.Errorf("Stat = %+v, want Exists %v Size %d", obj, tt.want, tt.wantSize)
				}
			})
		}
	})

	t.Run("Stat with a wrong key is denied", func(t *testing.T) {
		// versitygw answers 403 to a bad signature, as S3 does to a reader without list
		// permission: Stat says so, and the selector decides what it means.
		wrong := newBackend(t, Config{
			Name: "versity", Bucket: bucket, Region: srv.Region, Endpoint: srv.Endpoint,
			CredentialsFile: credFile(t, "default", srv.Access, "not-the-secret"),
		}, Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		obj, err := wrong.Stat(ctx, testKey)
		if !errors.Is(err, mirrors.ErrDenied) {
			t.Fatalf("Stat = %+v, %v; want an error wrapping mirrors.ErrDenied", obj, err)
		}
		if strings.Contains(err.Error(), "not-the-secret") {
			t.Errorf("error contains the secret key: %v", err)
		}
	})

	t.Run("Stat of an unreachable service is an error", func(t *testing.T) {
		down := newBackend(t, Config{
			Name: "down", Bucket: bucket, Region: srv.Region, Endpoint: "http://" + testenv.Addr(t, testenv.S3Host),
			CredentialsFile: srv.CredentialsFile(t, "default"),
		}, Options{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if obj, err := down.Stat(ctx, testKey); err == nil {
			t.Fatalf("Stat = %+v, want an error", obj)
		} else if strings.Contains(err.Error(), srv.Secret) {
			t.Errorf("error contains the secret key: %v", err)
		}
	})

	get, _ := sign(t, b, http.MethodGet, testKey, time.Minute)
	head, _ := sign(t, b, http.MethodHead, testKey, time.Minute)
	tamperSig := func(u *url.URL) *url.URL {
		q := u.Query()
		s := []byte(q.Get("X-Amz-Signature"))
		if s[0] == '0' {
			s[0] = '1'
		} else {
			s[0] = '0'
		}
		q.Set("X-Amz-Signature", string(s))
		c := *u
		c.RawQuery = q.Encode()
		return &c
	}
	withPath := func(u *url.URL, path string) *url.URL {
		c := *u
		c.Path, c.RawPath = path, ""
		return &c
	}
	srv.PutObject(t, bucket, testKey+"x", blob) // so that a changed path names an existing object

	tests := []struct {
		name       string
		method     string
		u          *url.URL
		host       string
		wantStatus int
		wantBody   bool
	}{
		{name: "GET URL, GET", method: http.MethodGet, u: get, wantStatus: http.StatusOK, wantBody: true},
		{name: "HEAD URL, HEAD", method: http.MethodHead, u: head, wantStatus: http.StatusOK},
		{name: "GET URL, HEAD", method: http.MethodHead, u: get, wantStatus: http.StatusForbidden},
		{name: "HEAD URL, GET", method: http.MethodGet, u: head, wantStatus: http.StatusForbidden},
		{name: "tampered signature", method: http.MethodGet, u: tamperSig(get), wantStatus: http.StatusForbidden},
		{name: "tampered path", method: http.MethodGet, u: withPath(get, get.Path+"x"), wantStatus: http.StatusForbidden},
		{name: "wrong host", method: http.MethodGet, u: get, host: "s3.example.com", wantStatus: http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := fetch(t, tt.method, tt.u, tt.host)
			if a.Status != tt.wantStatus {
				t.Fatalf("%s %s: status %d, want %d\n%s", tt.method, tt.name, a.Status, tt.wantStatus, a.Body)
			}
			if tt.wantBody && !bytes.Equal(a.Body, blob) {
				t.Errorf("body: %d bytes, want the %d-byte object", len(a.Body), len(blob))
			}
			if tt.wantStatus == http.StatusOK && a.Header.Get("Content-Length") != strconv.Itoa(len(blob)) {
				t.Errorf("Content-Length %q, want %d", a.Header.Get("Content-Length"), len(blob))
			}
		})
	}

	t.Run("expired", func(t *testing.T) {
		u, exp := sign(t, b, http.MethodGet, testKey, time.Second)
		if a := fetch(t, http.MethodGet, u, ""); a.Status != http.StatusOK {
			t.Logf("fresh 1s URL answered %d (signed at a second boundary)", a.Status)
		}
		time.Sleep(time.Until(exp) + time.Second)
		if a := fetch(t, http.MethodGet, u, ""); a.Status != http.StatusForbidden {
			t.Fatalf("expired URL: status %d, want 403\n%s", a.Status, a.Body)
		}
	})
}
