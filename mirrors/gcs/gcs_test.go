package gcs

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/mirrors"
)

const (
	testEmail = testenv.ServiceAccountEmail
	testKey   = "blobs/sha256/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func newBackend(t testing.TB, m Config, opts Options) *Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, m, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
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

func TestSignedURL(t *testing.T) {
	testenv.IsolateGCS(t)
	keyFile, key := testenv.ServiceAccountKey(t)
	tests := []struct {
		name     string
		emulator string
		method   string
		wantURL  string // scheme://host/path
	}{
		{name: "GET", method: http.MethodGet, wantURL: "https://storage.googleapis.com/oci-proxy-eu-west/" + testKey},
		{name: "HEAD", method: http.MethodHead, wantURL: "https://storage.googleapis.com/oci-proxy-eu-west/" + testKey},
		{name: "emulator GET", emulator: "127.0.0.4:4443", method: http.MethodGet, wantURL: "http://127.0.0.4:4443/oci-proxy-eu-west/" + testKey},
		{name: "emulator HEAD", emulator: "http://127.0.0.4:4443", method: http.MethodHead, wantURL: "http://127.0.0.4:4443/oci-proxy-eu-west/" + testKey},
		{name: "emulator https", emulator: "https://gcs.test:8443", method: http.MethodGet, wantURL: "https://gcs.test:8443/oci-proxy-eu-west/" + testKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("STORAGE_EMULATOR_HOST", tt.emulator)
			b := newBackend(t, Config{Name: "eu-west", Bucket: "oci-proxy-eu-west", CredentialsFile: keyFile}, Options{})
			const ttl = 15 * time.Minute
			before := time.Now().Truncate(time.Second)
			u, exp := sign(t, b, tt.method, testKey, ttl)
			after := time.Now()

			if got := u.Scheme + "://" + u.Host + u.Path; got != tt.wantURL {
				t.Errorf("URL %s, want %s", got, tt.wantURL)
			}
			q := u.Query()
			if got := q.Get("X-Goog-Credential"); !strings.HasPrefix(got, testEmail+"/") || !strings.HasSuffix(got, "/auto/storage/goog4_request") {
				t.Errorf("X-Goog-Credential = %s", got)
			}
			// The client measures the lifetime from its own clock, a moment after ours.
			if got := q.Get("X-Goog-Expires"); got != "900" && got != "899" {
				t.Errorf("X-Goog-Expires = %s, want 900", got)
			}
			if exp.Before(before.Add(ttl-time.Second)) || exp.After(after.Add(ttl)) {
				t.Errorf("expiry %s not within [%s, %s]", exp, before.Add(ttl-time.Second), after.Add(ttl))
			}
			if err := testenv.VerifyGCSV4(u, tt.method, &key.PublicKey); err != nil {
				t.Fatalf("signature for %s does not verify: %v", tt.method, err)
			}
			other := http.MethodHead
			if tt.method == http.MethodHead {
				other = http.MethodGet
			}
			if testenv.VerifyGCSV4(u, other, &key.PublicKey) == nil {
				t.Errorf("a %s URL verifies for %s", tt.method, other)
			}
			otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			if testenv.VerifyGCSV4(u, tt.method, &otherKey.PublicKey) == nil {
				t.Errorf("the URL verifies with another key")
			}
			for _, tamper := range []struct {
				name string
				fn   func(*url.URL)
			}{
				{"path", func(u *url.URL) { u.Path += "0" }},
				{"bucket", func(u *url.URL) { u.Path = strings.Replace(u.Path, "oci-proxy-eu-west", "oci-proxy-eu-wesT", 1) }},
				{"host", func(u *url.URL) { u.Host = "evil.example.com" }},
				{"expiry", func(u *url.URL) { setParam(u, "X-Goog-Expires", "604800") }},
				{"date", func(u *url.URL) { setParam(u, "X-Goog-Date", "20300101T000000Z") }},
				{"signature", func(u *url.URL) { flipSignature(u) }},
				{"added parameter", func(u *url.URL) { setParam(u, "response-content-type", "text/html") }},
			} {
				c := *u
				tamper.fn(&c)
				if testenv.VerifyGCSV4(&c, tt.method, &key.PublicKey) == nil {
					t.Errorf("tampered %s still verifies: %s", tamper.name, c.Redacted())
				}
			}
		})
	}
}

func setParam(u *url.URL, k, v string) {
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = q.Encode()
}

func flipSignature(u *url.URL) {
	s := []byte(u.Query().Get("X-Goog-Signature"))
	if s[len(s)-1] == '0' {
		s[len(s)-1] = '1'
	} else {
		s[len(s)-1] = '0'
	}
	setParam(u, "X-Goog-Signature", string(s))
}

func TestPublicURL(t *testing.T) {
	testenv.IsolateGCS(t)
	tests := []struct {
		name     string
		emulator string
		key      string
		want     string
	}{
		{name: "cloud", key: testKey, want: "https://storage.googleapis.com/pub/" + testKey},
		{name: "emulator", emulator: "127.0.0.4:4443", key: testKey, want: "http://127.0.0.4:4443/pub/" + testKey},
		{name: "escaped key", key: "blobs/a b?c#d", want: "https://storage.googleapis.com/pub/blobs/a%20b%3Fc%23d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("STORAGE_EMULATOR_HOST", tt.emulator)
			// No credentials at all: a public bucket needs none to hand out URLs.
			b := newBackend(t, Config{Name: "pub", Bucket: "pub", Public: true}, Options{})
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				u, exp := sign(t, b, method, tt.key, time.Minute)
				if u.String() != tt.want || !exp.IsZero() {
					t.Errorf("URL(%s) = %s, %s; want %s and the zero time", method, u, exp, tt.want)
				}
			}
		})
	}
}

func TestURLErrors(t *testing.T) {
	testenv.IsolateGCS(t)
	keyFile, _ := testenv.ServiceAccountKey(t)
	b := newBackend(t, Config{Name: "m", Bucket: "b", CredentialsFile: keyFile}, Options{})
	tests := []struct {
		name   string
		method string
		ttl    time.Duration
	}{
		{"PUT", http.MethodPut, time.Minute},
		{"POST", http.MethodPost, time.Minute},
		{"lower-case get", "get", time.Minute},
		{"zero ttl", http.MethodGet, 0},
		{"ttl over 7 days", http.MethodGet, MaxTTL + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if u, _, err := b.URL(ctx, tt.method, testKey, tt.ttl); err == nil {
				t.Fatalf("URL = %s, want an error", u)
			} else if !strings.Contains(err.Error(), `mirror "m"`) {
				t.Errorf("error %q does not name the mirror", err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	testenv.IsolateGCS(t)
	_, key := testenv.ServiceAccountKey(t)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	write := func(t *testing.T, body string) string {
		p := filepath.Join(t.TempDir(), "key.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	js := func(m map[string]string) string { b, _ := json.Marshal(m); return string(b) }
	tests := []struct {
		name    string
		file    func(t *testing.T) string
		bucket  string
		wantErr string
	}{
		{"missing file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope.json") }, "b", "credentials file"},
		{"not JSON, key quoted", func(t *testing.T) string { return write(t, pemKey) }, "b", "not valid JSON"},
		{"authorized user", func(t *testing.T) string {
			return write(t, js(map[string]string{"type": "authorized_user", "client_id": "x", "refresh_token": "y"}))
		}, "b", `want "service_account"`},
		{"external account", func(t *testing.T) string {
			return write(t, js(map[string]string{"type": "external_account", "credential_source": "x"}))
		}, "b", `want "service_account"`},
		{"no private key", func(t *testing.T) string {
			return write(t, js(map[string]string{"type": "service_account", "client_email": testEmail}))
		}, "b", "private_key are required"},
		{"key not PEM", func(t *testing.T) string {
			return write(t, js(map[string]string{"type": "service_account", "client_email": testEmail, "private_key": "MIIE..."}))
		}, "b", "not PEM"},
		{"key not RSA", func(t *testing.T) string {
			return write(t, js(map[string]string{"type": "service_account", "client_email": testEmail,
				"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}))}))
		}, "b", "not an RSA key"},
		{"bad emulator host", func(t *testing.T) string { t.Setenv("STORAGE_EMULATOR_HOST", "ftp://x"); return "" }, "b", "emulator host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := New(ctx, Config{Name: "m", Bucket: tt.bucket, CredentialsFile: tt.file(t)}, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `mirror "m"`) {
				t.Fatalf("New: error %v, want one naming the mirror and containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), pemKey[40:80]) {
				t.Errorf("error quotes the private key: %v", err)
			}
		})
	}
}

// TestStatStatus maps the JSON API's answers onto presence, with a fake server standing in for
// the emulator; TestFakeGCS covers the real protocol.
func TestStatStatus(t *testing.T) {
	testenv.IsolateGCS(t)
	keyFile, _ := testenv.ServiceAccountKey(t)
	tests := []struct {
		status     int
		retryAfter string
		want       bool
		wantSize   int64
		wantErr    bool
		wantIs     error // errors.Is target, when set
		throttled  bool
	}{
		{status: http.StatusOK, want: true, wantSize: 1234},
		{status: http.StatusNotFound, want: false, wantSize: -1},
		{status: http.StatusForbidden, wantErr: true, wantIs: mirrors.ErrDenied},
		{status: http.StatusInternalServerError, wantErr: true},
		{status: http.StatusServiceUnavailable, wantErr: true},
		{status: http.StatusTooManyRequests, retryAfter: "7", wantErr: true, throttled: true},
		{status: http.StatusUnauthorized, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if want := "/storage/v1/b/b/o/" + url.PathEscape(testKey); r.URL.EscapedPath() != want {
					t.Errorf("request %s %s, want %s", r.Method, r.URL.EscapedPath(), want)
				}
				w.Header().Set("Content-Type", "application/json")
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
				if tt.status == http.StatusOK {
					fmt.Fprintf(w, `{"kind":"storage#object","bucket":"b","name":%q,"size":"1234"}`, testKey)
				} else {
					fmt.Fprintf(w, `{"error":{"code":%d,"message":"status %d"}}`, tt.status, tt.status)
				}
			}))
			defer srv.Close()
			t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(srv.URL, "http://"))
			b := newBackend(t, Config{Name: "m", Bucket: "b", CredentialsFile: keyFile}, Options{})
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
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %v is not %v", err, tt.wantIs)
				}
				var te *mirrors.ThrottledError
				if errors.As(err, &te) != tt.throttled {
					t.Errorf("error %v: throttled = %v, want %v", err, !tt.throttled, tt.throttled)
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
	testenv.IsolateGCS(t)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	t.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(srv.URL, "http://"))
	b := newBackend(t, Config{Name: "m", Bucket: "b"}, Options{Timeout: 200 * time.Millisecond})
	start := time.Now()
	// No deadline on purpose: Options.Timeout must supply one.
	if _, err := b.Stat(context.Background(), testKey); err == nil {
		t.Fatal("Stat against a hanging server succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Stat took %s, want about the 200ms timeout", d)
	}
}

func BenchmarkSignV4(b *testing.B) {
	b.Setenv("STORAGE_EMULATOR_HOST", "")
	keyFile, _ := testenv.ServiceAccountKey(b)
	be := newBackend(b, Config{Name: "m", Bucket: "oci-proxy-eu-west", CredentialsFile: keyFile}, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := be.URL(ctx, http.MethodGet, testKey, 15*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSignedURLWithADC signs with a service-account key found through Application Default
// Credentials rather than the mirror's credentials_file, for Cloud Storage and for an emulator,
// whose client has no credentials of its own to sign with.
func TestSignedURLWithADC(t *testing.T) {
	for _, tt := range []struct {
		name, emulator, wantHost string
	}{
		{name: "cloud", wantHost: PublicHost},
		{name: "emulator", emulator: "127.0.0.4:4443", wantHost: "127.0.0.4:4443"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			testenv.IsolateGCS(t)
			t.Setenv("STORAGE_EMULATOR_HOST", tt.emulator)
			keyFile, key := testenv.ServiceAccountKey(t)
			t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", keyFile)
			b := newBackend(t, Config{Name: "adc", Bucket: "oci-proxy-eu-west"}, Options{})
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				u, _ := sign(t, b, method, testKey, time.Minute)
				if u.Host != tt.wantHost {
					t.Errorf("%s: host %s, want %s", method, u.Host, tt.wantHost)
				}
				if err := testenv.VerifyGCSV4(u, method, &key.PublicKey); err != nil {
					t.Errorf("%s: signature does not verify: %v", method, err)
				}
				if !strings.HasPrefix(u.Query().Get("X-Goog-Credential"), testEmail+"/") {
					t.Errorf("%s: X-Goog-Credential = %s", method, u.Query().Get("X-Goog-Credential"))
				}
			}
		})
	}
}

// Against an emulator, Application Default Credentials that hold no service-account key leave
// nothing to sign with: URL says so rather than what the client's search for an identity found.
// A service-account file whose key is broken fails New.
func TestADCWithoutKey(t *testing.T) {
	write := func(t *testing.T, body string) string {
		p := filepath.Join(t.TempDir(), "adc.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	js := func(m map[string]string) string { b, _ := json.Marshal(m); return string(b) }
	for _, tt := range []struct {
		name    string
		adc     func(t *testing.T) string
		wantNew string // New's error; "" when New succeeds and URL fails
	}{
		{name: "missing file", adc: func(t *testing.T) string { return filepath.Join(t.TempDir(), "none.json") }},
		{name: "authorized user", adc: func(t *testing.T) string {
			return write(t, js(map[string]string{"type": "authorized_user", "client_id": "x", "client_secret": "y", "refresh_token": "z"}))
		}},
		{name: "not JSON", adc: func(t *testing.T) string { return write(t, "{") }},
		{name: "service account with a broken key", wantNew: "GOOGLE_APPLICATION_CREDENTIALS", adc: func(t *testing.T) string {
			return write(t, js(map[string]string{"type": "service_account", "client_email": testEmail, "private_key": "MIIE..."}))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			testenv.IsolateGCS(t)
			t.Setenv("STORAGE_EMULATOR_HOST", "127.0.0.4:4443")
			t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", tt.adc(t))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := New(ctx, Config{Name: "m", Bucket: "b"}, Options{})
			if tt.wantNew != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantNew) || !strings.Contains(err.Error(), `mirror "m"`) {
					t.Fatalf("New: %v, want an error naming the mirror and %s", err, tt.wantNew)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer b.Close()
			if u, _, err := b.URL(ctx, http.MethodGet, testKey, time.Minute); err == nil {
				t.Fatalf("URL = %s, want an error", u.Redacted())
			} else if !strings.Contains(err.Error(), "no service-account key") || !strings.Contains(err.Error(), `mirror "m"`) {
				t.Errorf("URL: %v, want one saying there is no key to sign with", err)
			}
			// A public mirror signs nothing and needs no key.
			pub := newBackend(t, Config{Name: "pub", Bucket: "b", Public: true}, Options{})
			if _, _, err := pub.URL(ctx, http.MethodGet, testKey, time.Minute); err != nil {
				t.Errorf("public URL: %v", err)
			}
		})
	}
}
