// Package gcs is the mirrors.Backend for Google Cloud Storage: it checks whether a blob is stored
// (object attributes) and hands out V4 signed GET and HEAD URLs for it, or plain URLs for a public
// bucket. As a mirrors.Writer it also stores and deletes blobs, for the sync command.
//
// Deciding what to copy is package syncer's job, and choosing between mirrors is package
// mirrors' job. It never logs; errors carry the mirror name and key but no
// credentials or signatures.
package gcs

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"

	"github.com/happy-turtle/oci-proxy/mirrors"
)

// MaxTTL is the longest lifetime V4 signing allows.
const MaxTTL = 7 * 24 * time.Hour

// DefaultTimeout bounds a Stat whose context has no deadline.
const DefaultTimeout = 5 * time.Second

// PublicHost serves public objects at https://PublicHost/<bucket>/<key>.
const PublicHost = "storage.googleapis.com"

// Options tune a Backend. The zero value is ready for production use.
type Options struct {
	// Timeout bounds a Stat whose context has no deadline of its own. Zero: DefaultTimeout.
	Timeout time.Duration
}

// Config is what a Backend needs to know of its mirror; internal/app fills it from a checked
// configuration, so New trusts it: Bucket is set.
type Config struct {
	Name            string // the mirror's name, for messages
	Bucket          string
	CredentialsFile string // a service-account JSON key; "": Application Default Credentials
	Public          bool   // unsigned public URLs
}

// Backend is one GCS bucket. It is safe for concurrent use.
type Backend struct {
	name    string
	bucket  *storage.BucketHandle
	client  *storage.Client
	public  bool
	base    url.URL // scheme and host of public and signed URLs
	timeout time.Duration
	// signer is the service-account key of credentials_file or of Application Default
	// Credentials; without one the client signs through the IAM credentials API, which an
	// emulator lacks (emulated).
	signer   *keySigner
	emulated bool
	// conns is the connection pool under the client's auth layers, which do not pass
	// CloseIdleConnections on: Close empties it itself.
	conns *http.Transport
}

var _ mirrors.Backend = (*Backend)(nil)

// New builds the backend for mirror c (provider gcs). With c.CredentialsFile, that service-account
// JSON key authenticates the client and signs URLs; without it, Application Default Credentials
// do (GOOGLE_APPLICATION_CREDENTIALS, gcloud's credentials, or the metadata server, which signs
// through the IAM credentials API). When GOOGLE_APPLICATION_CREDENTIALS names a service-account
// key, URLs are signed with that key as with c.CredentialsFile, the emulator's included. With
// c.Public, URLs are plain and unsigned, and without a key file the client reads anonymously.
//
// The client's connections are its own, so that Close can release them; they do not present
// a client certificate (GOOGLE_API_USE_CLIENT_CERTIFICATE).
//
// New reads local files only; tokens are fetched lazily, on the first call that needs them.
// Close releases the client.
func New(ctx context.Context, c Config, opts Options) (*Backend, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// A failed Stat is tried once: the caller treats a failure as "try the next mirror" within a
	// short budget, and retrying with back-off would spend that budget on a mirror that is
	// already misbehaving.
	const attempts = 1
	// The client sends its own calls to the emulator when this is set; public and signed URLs
	// must name it too.
	emulator := os.Getenv("STORAGE_EMULATOR_HOST")

	var signer *keySigner
	switch {
	case c.CredentialsFile != "":
		s, err := readKeyFile(c.CredentialsFile)
		if err != nil {
			return nil, fmt.Errorf("mirror %q: gcs: %w", c.Name, err)
		}
		signer = s
	case !c.Public:
		s, err := adcKey()
		if err != nil {
			return nil, fmt.Errorf("mirror %q: gcs: GOOGLE_APPLICATION_CREDENTIALS: %w", c.Name, err)
		}
		signer = s
	}
	var auth []option.ClientOption
	base := url.URL{Scheme: "https", Host: PublicHost}
	if emulator != "" {
		u, err := emulatorURL(emulator)
		if err != nil {
			return nil, fmt.Errorf("mirror %q: gcs: %w", c.Name, err)
		}
		base = url.URL{Scheme: u.Scheme, Host: u.Host}
		// The client talks to the emulator without credentials; a key only signs.
		auth = append(auth, option.WithoutAuthentication())
	} else if c.CredentialsFile != "" {
		auth = append(auth, option.WithAuthCredentialsFile(option.ServiceAccount, c.CredentialsFile))
	} else if c.Public {
		// Anyone may read a public bucket's objects, so presence checks need no identity, and a
		// public mirror works on a machine without Google credentials.
		auth = append(auth, option.WithoutAuthentication())
	}
	conns := newTransport()
	// The scopes the client asks for by default; the IAM credentials API, which signs without a
	// key, needs cloud-platform.
	rt, err := htransport.NewTransport(ctx, conns, append(auth, option.WithScopes(storage.ScopeFullControl, cloudPlatformScope))...)
	if err != nil {
		return nil, fmt.Errorf("mirror %q: gcs: %w", c.Name, err)
	}
	// The client is given the same credentials options, from which it learns whom to sign as
	// through the IAM credentials API.
	client, err := storage.NewClient(ctx, append(auth, option.WithHTTPClient(&http.Client{Transport: rt}))...)
	if err != nil {
		conns.CloseIdleConnections()
		return nil, fmt.Errorf("mirror %q: gcs: %w", c.Name, err)
	}
	client.SetRetry(storage.WithMaxAttempts(attempts))
	return &Backend{
		name:     c.Name,
		bucket:   client.Bucket(c.Bucket),
		client:   client,
		public:   c.Public,
		base:     base,
		timeout:  timeout,
		signer:   signer,
		emulated: emulator != "",
		conns:    conns,
	}, nil
}

const cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform"

// newTransport is the connection pool of one Backend: Go's default transport (proxy from the
// environment, dial and TLS timeouts, HTTP/2), with as many idle connections per host as the
// Cloud Storage client keeps by default, since every call goes to the one host.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 100
	return t
}

// Close releases the client and closes its idle connections at once, rather than when they time
// out: a replaced configuration's backend is closed while the new one already has its own.
// Calls still in flight finish.
func (b *Backend) Close() error {
	err := b.client.Close()
	b.conns.CloseIdleConnections()
	return err
}

func emulatorURL(host string) (*url.URL, error) {
	if !strings.Contains(host, "://") {
		host = "http://" + host
	}
	u, err := url.Parse(host)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("emulator host %q is not host:port or an http(s) URL", host)
	}
	return u, nil
}

// Stat reports whether key is in the bucket. A 403 counts as absent: a reader without list
// permission cannot tell a missing object from a forbidden one, and neither can be served.
func (b *Backend) Stat(ctx context.Context, key string) (mirrors.Object, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.timeout)
		defer cancel()
	}
	attrs, err := b.bucket.Object(key).Attrs(ctx)
	if err != nil {
		if errors.Is(err, storage.ErrObjectNotExist) {
			return mirrors.Object{Exists: false, Size: -1}, nil
		}
		var ge *googleapi.Error
		if errors.As(err, &ge) {
			if ge.Code == http.StatusForbidden {
				// The selector takes a denied blob for an absent one; the credentials probe
				// tells refused credentials from a missing object.
				return mirrors.Object{}, fmt.Errorf("stat %s on mirror %q: %w: %w", key, b.name, mirrors.ErrDenied, err)
			}
			if te := mirrors.Throttled(ge.Code, ge.Header.Get("Retry-After"), time.Now()); te != nil {
				return mirrors.Object{}, fmt.Errorf("stat %s on mirror %q: %w", key, b.name, te)
			}
		}
		return mirrors.Object{}, fmt.Errorf("stat %s on mirror %q: %w", key, b.name, err)
	}
	return mirrors.Object{Exists: true, Size: attrs.Size}, nil
}

// URL returns a V4 signed URL for a GET or HEAD of key, valid for ttl, and its expiry as written
// into the URL (X-Goog-Date + X-Goog-Expires). The method is part of the signature. For a public
// bucket it returns the plain object URL and the zero time.
//
// Signing without a key file goes through the IAM credentials API, which the client calls without
// a context; ctx then only guards the argument checks.
func (b *Backend) URL(ctx context.Context, method, key string, ttl time.Duration) (*url.URL, time.Time, error) {
	if method != http.MethodGet && method != http.MethodHead {
		return nil, time.Time{}, fmt.Errorf("sign %s on mirror %q: method %q is not GET or HEAD", key, b.name, method)
	}
	if b.public {
		u := b.base
		u.Path = "/" + b.bucket.BucketName() + "/" + key
		return &u, time.Time{}, nil
	}
	if ttl < time.Second || ttl > MaxTTL {
		return nil, time.Time{}, fmt.Errorf("sign %s on mirror %q: ttl %s outside [1s, %s]", key, b.name, ttl, MaxTTL)
	}
	if err := ctx.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("sign %s %s on mirror %q: %w", method, key, b.name, err)
	}
	o := &storage.SignedURLOptions{
		Scheme:   storage.SigningSchemeV4,
		Method:   method,
		Expires:  time.Now().Add(ttl),
		Insecure: b.base.Scheme == "http",
	}
	switch {
	case b.signer != nil:
		o.GoogleAccessID = b.signer.email
		o.SignBytes = b.signer.sign
	case b.emulated:
		// The client has no credentials to sign with there, and an emulator has no IAM API.
		return nil, time.Time{}, fmt.Errorf("sign %s %s on mirror %q: no service-account key to sign with: set credentials_file, or GOOGLE_APPLICATION_CREDENTIALS to a key file", method, key, b.name)
	}
	s, err := b.bucket.SignedURL(key, o)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sign %s %s on mirror %q: %w", method, key, b.name, err)
	}
	u, err := url.Parse(s)
	if err != nil {
		// Not quoted: it holds the signature.
		return nil, time.Time{}, fmt.Errorf("sign %s %s on mirror %q: the client returned an unparsable URL", method, key, b.name)
	}
	exp, err := Expiry(u)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sign %s %s on mirror %q: %w", method, key, b.name, err)
	}
	return u, exp, nil
}

// Expiry reads when a V4 signed URL stops working from its X-Goog-Date and X-Goog-Expires.
func Expiry(u *url.URL) (time.Time, error) {
	q := u.Query()
	signed, err := time.Parse("20060102T150405Z", q.Get("X-Goog-Date"))
	if err != nil {
		return time.Time{}, errors.New("signed URL has no valid X-Goog-Date")
	}
	secs, err := strconv.Atoi(q.Get("X-Goog-Expires"))
	if err != nil || secs <= 0 {
		return time.Time{}, errors.New("signed URL has no valid X-Goog-Expires")
	}
	return signed.Add(time.Duration(secs) * time.Second), nil
}

// keySigner signs with a service account's private key, parsed once rather than on every URL.
type keySigner struct {
	email string
	key   *rsa.PrivateKey
}

func (s *keySigner) sign(b []byte) ([]byte, error) {
	sum := sha256.Sum256(b)
	return rsa.SignPKCS1v15(nil, s.key, crypto.SHA256, sum[:])
}

// readKeyFile loads a service-account JSON key. Only that type is accepted: the file comes from
// the operator's configuration, and other credential types (external accounts, impersonation)
// can run commands or reach arbitrary URLs, so they belong in Application Default Credentials.
func readKeyFile(path string) (*keySigner, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	return parseKeyFile(path, data)
}

// adcKey returns the service-account key that GOOGLE_APPLICATION_CREDENTIALS names, or nil when
// it names none: unset, unreadable, or credentials of another type (an authorized user, an
// external account), which the client itself uses or rejects when it needs an identity. A
// service-account file whose key cannot sign is an error.
func adcKey() (*keySigner, error) {
	path := os.Getenv("GOOGLE_APPLICATION_CREDENTIALS")
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		// The client reads the same file for its identity and reports this itself; an
		// emulator needs no identity, and URL says what is missing when asked to sign.
		return nil, nil
	}
	var kind struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(data, &kind) != nil || kind.Type != "service_account" {
		return nil, nil
	}
	return parseKeyFile(path, data)
}

// parseKeyFile reads the service-account JSON key data, read from path.
func parseKeyFile(path string, data []byte) (*keySigner, error) {
	var sa struct {
		Type        string `json:"type"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	// The decoder's error may quote the file, which holds the private key: keep only its kind.
	if err := json.Unmarshal(data, &sa); err != nil {
		return nil, fmt.Errorf("credentials file %s: not valid JSON", path)
	}
	if sa.Type != "service_account" {
		return nil, fmt.Errorf("credentials file %s: type %q, want \"service_account\"", path, sa.Type)
	}
	if sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, fmt.Errorf("credentials file %s: client_email and private_key are required", path)
	}
	block, _ := pem.Decode([]byte(sa.PrivateKey))
	if block == nil {
		return nil, fmt.Errorf("credentials file %s: private_key is not PEM", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	rk, ok := key.(*rsa.PrivateKey)
	if err != nil || !ok {
		return nil, fmt.Errorf("credentials file %s: private_key is not an RSA key", path)
	}
	return &keySigner{email: sa.ClientEmail, key: rk}, nil
}
