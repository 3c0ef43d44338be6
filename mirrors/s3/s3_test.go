package s3

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/mirrors"
)

const (
	testAccess = "AKIDTESTMIRROR"
	testSecret = "s3cr3t-test-key-never-logged"
	testKey    = "blobs/sha256/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func credFile(t *testing.T, profile, access, secret string) string {
	t.Helper()
	return writeFile(t, "credentials",
		fmt.Sprintf("[%s]\naws_access_key_id = %s\naws_secret_access_key = %s\n", profile, access, secret))
}

func newBackend(t testing.TB, m Config, opts Options) *Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, m, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func sign(t *testing.T, b *Backend, method, key string, ttl time.Duration) (*url.URL, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, exp, err := b.URL(ctx, method, key, ttl)
	if err != nil {
		t.Fatalf("URL(%s, %s): %v", method, key, err)
	}
	return u, exp
}

// awsEscape is the URI encoding of SigV4: everything but the unreserved characters.
func awsEscape(s string) string {
	var sb strings.Builder
	for _, c := range []byte(s) {
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

func hmacSHA256(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// verifySigV4 recomputes the signature of a presigned S3 URL for method from the secret key, as
// AWS documents it for query-string authentication, and reports why it does not match.
func verifySigV4(u *url.URL, method, secret string) error {
	q := u.Query()
	if got := q.Get("X-Amz-Algorithm"); got != "AWS4-HMAC-SHA256" {
		return fmt.Errorf("algorithm %q", got)
	}
	if got := q.Get("X-Amz-SignedHeaders"); got != "host" {
		return fmt.Errorf("signed headers %q, want only host (clients send no other)", got)
	}
	var params []string
	for k, vs := range q {
		if k == "X-Amz-Signature" {
			continue
		}
		for _, v := range vs {
			params = append(params, awsEscape(k)+"="+awsEscape(v))
		}
	}
	sort.Strings(params)
	creq := strings.Join([]string{
		method,
		u.EscapedPath(),
		strings.Join(params, "&"),
		"host:" + u.Host + "\n",
		"host",
		"UNSIGNED-PAYLOAD",
	}, "\n")
	cred := strings.SplitN(q.Get("X-Amz-Credential"), "/", 2)
	if len(cred) != 2 {
		return fmt.Errorf("credential %q", q.Get("X-Amz-Credential"))
	}
	scope := cred[1]
	parts := strings.Split(scope, "/") // date/region/service/aws4_request
	if len(parts) != 4 {
		return fmt.Errorf("scope %q", scope)
	}
	sum := sha256.Sum256([]byte(creq))
	sts := "AWS4-HMAC-SHA256\n" + q.Get("X-Amz-Date") + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	k := hmacSHA256([]byte("AWS4"+secret), parts[0])
	k = hmacSHA256(k, parts[1])
	k = hmacSHA256(k, parts[2])
	k = hmacSHA256(k, parts[3])
	want := hex.EncodeToString(hmacSHA256(k, sts))
	if got := q.Get("X-Amz-Signature"); !hmac.Equal([]byte(got), []byte(want)) {
		return fmt.Errorf("signature %s, recomputed %s", got, want)
	}
	return nil
}

func TestURL(t *testing.T) {
	testenv.IsolateAWS(t)
	creds := credFile(t, "default", testAccess, testSecret)
	tests := []struct {
		name     string
		mirror   Config
		method   string
		wantHost string
		wantPath string
		scheme   string
	}{
		{
			name:     "endpoint, path style, GET",
			mirror:   Config{Name: "m", Bucket: "blobs-bucket", Region: "eu-central-1", Endpoint: "http://127.0.0.3:9000", CredentialsFile: creds},
			method:   http.MethodGet,
			scheme:   "http",
			wantHost: "127.0.0.3:9000",
			wantPath: "/blobs-bucket/" + testKey,
		},
		{
			name:     "endpoint, path style, HEAD",
			mirror:   Config{Name: "m", Bucket: "blobs-bucket", Region: "eu-central-1", Endpoint: "https://s3.example.net", CredentialsFile: creds},
			method:   http.MethodHead,
			scheme:   "https",
			wantHost: "s3.example.net",
			wantPath: "/blobs-bucket/" + testKey,
		},
		{
			name:     "AWS, virtual host, GET",
			mirror:   Config{Name: "m", Bucket: "oci-proxy-us-east-1", Region: "us-east-1", CredentialsFile: creds},
			method:   http.MethodGet,
			scheme:   "https",
			wantHost: "oci-proxy-us-east-1.s3.us-east-1.amazonaws.com",
			wantPath: "/" + testKey,
		},
		{
			name:     "AWS, virtual host, HEAD",
			mirror:   Config{Name: "m", Bucket: "oci-proxy-eu", Region: "eu-west-1", CredentialsFile: creds},
			method:   http.MethodHead,
			scheme:   "https",
			wantHost: "oci-proxy-eu.s3.eu-west-1.amazonaws.com",
			wantPath: "/" + testKey,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t, tt.mirror, Options{})
			const ttl = 15 * time.Minute
			before := time.Now().Truncate(time.Second)
			u, exp := sign(t, b, tt.method, testKey, ttl)
			after := time.Now()

			if u.Scheme != tt.scheme || u.Host != tt.wantHost || u.Path != tt.wantPath {
				t.Errorf("URL %s://%s%s, want %s://%s%s", u.Scheme, u.Host, u.Path, tt.scheme, tt.wantHost, tt.wantPath)
			}
			q := u.Query()
			if got, want := q.Get("X-Amz-Expires"), "900"; got != want {
				t.Errorf("X-Amz-Expires = %s, want %s", got, want)
			}
			if got := q.Get("X-Amz-Credential"); !strings.HasPrefix(got, testAccess+"/") || !strings.Contains(got, "/"+tt.mirror.Region+"/s3/aws4_request") {
				t.Errorf("X-Amz-Credential = %s", got)
			}
			if exp.Before(before.Add(ttl)) || exp.After(after.Add(ttl)) {
				t.Errorf("expiry %s not within [%s, %s]", exp, before.Add(ttl), after.Add(ttl))
			}
			if strings.Contains(u.String(), testSecret) {
				t.Errorf("URL contains the secret key")
			}
			if err := verifySigV4(u, tt.method, testSecret); err != nil {
				t.Errorf("signature for %s does not verify: %v", tt.method, err)
			}
			other := http.MethodHead
			if tt.method == http.MethodHead {
				other = http.MethodGet
			}
			if err := verifySigV4(u, other, testSecret); err == nil {
				t.Errorf("a %s URL verifies for %s", tt.method, other)
			}
			tampered := *u
			tampered.Path += "0"
			if err := verifySigV4(&tampered, tt.method, testSecret); err == nil {
				t.Errorf("a URL with a changed path still verifies")
			}
		})
	}
}

func TestURLErrors(t *testing.T) {
	testenv.IsolateAWS(t)
	b := newBackend(t, Config{Name: "m", Bucket: "b", Region: "us-east-1",
		CredentialsFile: credFile(t, "default", testAccess, testSecret)}, Options{})
	tests := []struct {
		name   string
		method string
		ttl    time.Duration
	}{
		{"PUT", http.MethodPut, time.Minute},
		{"DELETE", http.MethodDelete, time.Minute},
		{"lower-case get", "get", time.Minute},
		{"zero ttl", http.MethodGet, 0},
		{"negative ttl", http.MethodGet, -time.Minute},
		{"ttl over 7 days", http.MethodGet, MaxTTL + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			u, _, err := b.URL(ctx, tt.method, testKey, tt.ttl)
			if err == nil {
				t.Fatalf("URL(%s, ttl %s) = %s, want an error", tt.method, tt.ttl, u)
			}
			if !strings.Contains(err.Error(), `mirror "m"`) {
				t.Errorf("error %q does not name the mirror", err)
			}
		})
	}
}

// TestCredentials checks where the keys in the URL come from: the default chain, a profile, or a
// credentials file that wins over the environment.
func TestCredentials(t *testing.T) {
	tests := []struct {
		name       string
		env        map[string]string
		files      func(t *testing.T) (config, credentials string) // shared config files for the chain
		mirror     func(t *testing.T) Config
		wantAccess string
		wantErr    string
	}{
		{
			name:       "environment",
			env:        map[string]string{"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "envsecret"},
			mirror:     func(t *testing.T) Config { return Config{} },
			wantAccess: "AKIDENV",
		},
		{
			name: "named profile from the shared files",
			files: func(t *testing.T) (string, string) {
				return writeFile(t, "config", "[profile mirror]\nregion = us-east-1\n"),
					writeFile(t, "credentials", "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = x\n[mirror]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = y\n")
			},
			mirror:     func(t *testing.T) Config { return Config{Profile: "mirror"} },
			wantAccess: "AKIDPROFILE",
		},
		{
			name: "credentials file wins over the environment",
			env:  map[string]string{"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "envsecret"},
			mirror: func(t *testing.T) Config {
				return Config{CredentialsFile: credFile(t, "default", "AKIDFILE", testSecret)}
			},
			wantAccess: "AKIDFILE",
		},
		{
			name: "credentials file with a profile",
			mirror: func(t *testing.T) Config {
				return Config{Profile: "p", CredentialsFile: writeFile(t, "creds",
					"[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = x\n[p]\naws_access_key_id = AKIDP\naws_secret_access_key = "+testSecret+"\n")}
			},
			wantAccess: "AKIDP",
		},
		{
			name: "credentials file without the profile",
			mirror: func(t *testing.T) Config {
				return Config{Profile: "missing", CredentialsFile: credFile(t, "default", "AKIDFILE", testSecret)}
			},
			wantErr: `profile "missing"`,
		},
		{
			name: "credentials file without keys",
			mirror: func(t *testing.T) Config {
				return Config{CredentialsFile: writeFile(t, "creds", "[default]\nregion = us-east-1\n")}
			},
			wantErr: "no aws_access_key_id",
		},
		{
			name: "credentials file missing",
			mirror: func(t *testing.T) Config {
				return Config{CredentialsFile: filepath.Join(t.TempDir(), "nope")}
			},
			wantErr: "credentials file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testenv.IsolateAWS(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			if tt.files != nil {
				cfg, creds := tt.files(t)
				t.Setenv("AWS_CONFIG_FILE", cfg)
				t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
			}
			m := tt.mirror(t)
			m.Name, m.Bucket, m.Region = "m", "b", "us-east-1"
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := New(ctx, m, Options{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: error %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), testSecret) {
					t.Errorf("error contains the secret key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			u, _ := sign(t, b, http.MethodGet, testKey, time.Minute)
			if got := strings.SplitN(u.Query().Get("X-Amz-Credential"), "/", 2)[0]; got != tt.wantAccess {
				t.Errorf("signed with access key %s, want %s", got, tt.wantAccess)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	testenv.IsolateAWS(t)
	creds := credFile(t, "default", testAccess, testSecret)
	tests := []struct {
		name    string
		mirror  Config
		wantErr string
	}{
		{"no region anywhere", Config{Name: "m", Bucket: "b", CredentialsFile: creds}, "region is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := New(ctx, tt.mirror, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `mirror "m"`) {
				t.Fatalf("New: error %v, want one naming the mirror and containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestStatStatus maps the service's answers to HeadObject onto presence, with a fake S3 that
// answers a fixed status; the real protocol is covered by TestVersityGW.
func TestStatStatus(t *testing.T) {
	testenv.IsolateAWS(t)
	tests := []struct {
		name       string
		status     int
		retryAfter string
		want       bool
		wantSize   int64
		wantErr    bool
		denied     bool                    // the error wraps mirrors.ErrDenied
		throttled  *mirrors.ThrottledError // the error is this
	}{
		{status: http.StatusOK, want: true, wantSize: 1234},
		{status: http.StatusNotFound, want: false, wantSize: -1},
		{status: http.StatusForbidden, wantErr: true, denied: true},
		{status: http.StatusInternalServerError, wantErr: true},
		{status: http.StatusServiceUnavailable, wantErr: true},
		{name: "503 with Retry-After", status: http.StatusServiceUnavailable, retryAfter: "4", wantErr: true,
			throttled: &mirrors.ThrottledError{Status: 503, RetryAfter: 4 * time.Second}},
		{status: http.StatusTooManyRequests, wantErr: true, throttled: &mirrors.ThrottledError{Status: 429}},
		{status: http.StatusBadRequest, wantErr: true},
		{status: http.StatusUnauthorized, wantErr: true},
	}
	for _, tt := range tests {
		if tt.name == "" {
			tt.name = http.StatusText(tt.status)
		}
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				if r.Method != http.MethodHead || r.URL.Path != "/b/"+testKey {
					t.Errorf("request %s %s", r.Method, r.URL.Path)
				}
				if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential="+testAccess+"/") {
					t.Errorf("Authorization %q", r.Header.Get("Authorization"))
				}
				if tt.status == http.StatusOK {
					w.Header().Set("Content-Length", "1234")
				}
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			b := newBackend(t, Config{Name: "m", Bucket: "b", Region: "us-east-1", Endpoint: srv.URL,
				CredentialsFile: credFile(t, "default", testAccess, testSecret)}, Options{HTTPClient: srv.Client()})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			obj, err := b.Stat(ctx, testKey)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Stat = %+v, want an error", obj)
				}
				for _, s := range []string{`mirror "m"`, testKey} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				if strings.Contains(err.Error(), testSecret) {
					t.Errorf("error contains the secret key: %v", err)
				}
				if n := calls.Load(); n != 1 {
					t.Errorf("%d requests, want 1 (no retries by default)", n)
				}
				if denied := errors.Is(err, mirrors.ErrDenied); denied != tt.denied {
					t.Errorf("error %v: errors.Is(mirrors.ErrDenied) = %v, want %v", err, denied, tt.denied)
				}
				var te *mirrors.ThrottledError
				if !errors.As(err, &te) {
					te = nil
				}
				if diff := cmp.Diff(tt.throttled, te); diff != "" {
					t.Errorf("throttling of %v (-want +got):\n%s", err, diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			if obj.Exists != tt.want || obj.Size != tt.wantSize {
				t.Errorf("Stat = %+v, want Exists %v Size %d", obj, tt.want, tt.wantSize)
			}
		})
	}
}

func TestStatDeadline(t *testing.T) {
	testenv.IsolateAWS(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	b := newBackend(t, Config{Name: "m", Bucket: "b", Region: "us-east-1", Endpoint: srv.URL,
		CredentialsFile: credFile(t, "default", testAccess, testSecret)},
		Options{HTTPClient: srv.Client(), Timeout: 200 * time.Millisecond})
	start := time.Now()
	// No deadline on purpose: Options.Timeout must supply one.
	_, err := b.Stat(context.Background(), testKey)
	if err == nil {
		t.Fatal("Stat against a hanging server succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Stat took %s, want about the 200ms timeout", d)
	}
}

func BenchmarkPresignGET(b *testing.B) {
	creds := filepath.Join(b.TempDir(), "credentials")
	if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = "+testAccess+"\naws_secret_access_key = "+testSecret+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, m := range []Config{
		{Name: "aws", Bucket: "oci-proxy-us-east-1", Region: "us-east-1", CredentialsFile: creds},
		{Name: "endpoint", Bucket: "blobs", Region: "us-east-1", Endpoint: "http://127.0.0.3:9000", CredentialsFile: creds},
	} {
		b.Run(m.Name, func(b *testing.B) {
			be := newBackend(b, m, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := be.URL(ctx, http.MethodGet, testKey, 15*time.Minute); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
