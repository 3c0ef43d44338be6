// Package s3 is the mirrors.Backend for Amazon S3 and S3-compatible services: it checks whether a
// blob is stored (HeadObject) and hands out SigV4 presigned GET and HEAD URLs for it. As a
// mirrors.Writer it also stores and deletes blobs, for the sync command.
//
// Deciding what to copy is package syncer's job, and choosing between mirrors is package
// mirrors' job. It never logs; errors carry the mirror name and key but no
// credentials or signatures.
package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/happy-turtle/oci-proxy/mirrors"
)

// MaxTTL is the longest lifetime SigV4 allows for a presigned URL.
const MaxTTL = 7 * 24 * time.Hour

// DefaultTimeout bounds a Stat whose context has no deadline.
const DefaultTimeout = 5 * time.Second

// Options tune a Backend. The zero value is ready for production use.
type Options struct {
	// HTTPClient carries every request to the service. Nil: the SDK's buildable client (keep-alive
	// pool, TLS 1.2+, dial and TLS handshake timeouts, AWS_CA_BUNDLE honoured), one per Backend
	// and shared by all its calls. A client given here must trust the service's certificate by
	// itself: with AWS_CA_BUNDLE set, the SDK cannot add to it and New fails.
	HTTPClient *http.Client
	// Timeout bounds a Stat whose context has no deadline of its own. Zero: DefaultTimeout.
	Timeout time.Duration
	// PartSize is the part size of multipart uploads, and the size from which Put uses them.
	// Zero: DefaultPartSize. S3 requires at least 5 MiB.
	PartSize int64
}

// Config is what a Backend needs to know of its mirror; internal/app fills it from a checked
// configuration, so New trusts it: Bucket is set, and Endpoint is "" or an absolute http(s) URL.
type Config struct {
	Name            string // the mirror's name, for messages
	Bucket          string
	Region          string // "": the AWS configuration's region, else us-east-1 with an Endpoint
	Endpoint        string // an S3-compatible service, addressed path style; "" for AWS
	Profile         string // a shared-config profile (or a section of CredentialsFile)
	CredentialsFile string // a shared credentials file whose static keys win over the chain
}

// Backend is one S3 bucket. It is safe for concurrent use.
type Backend struct {
	name     string
	bucket   string
	client   *s3.Client
	presign  *s3.PresignClient
	partSize int64 // of Put; 0: DefaultPartSize
	timeout  time.Duration
}

var _ mirrors.Backend = (*Backend)(nil)

// New builds the backend for mirror c (provider s3). Credentials come from the SDK's default chain
// (environment, shared files, SSO, container and instance roles), from the shared-config profile
// c.Profile, or, when c.CredentialsFile is set, only from the static keys stored in that shared
// credentials file (section c.Profile, else "default"), so that a key file named in the config wins
// over whatever the environment holds; such keys are read once, so a rotated file takes effect
// on the next configuration reload. With c.Endpoint set, requests go to that S3-compatible
// service with path-style addressing.
//
// New reads local files only; credentials are fetched lazily, on the first call that needs them.
func New(ctx context.Context, c Config, opts Options) (*Backend, error) {
	// A failed Stat is tried once: the caller treats a failure as "try the next mirror" within a
	// short budget, and retrying with back-off would spend that budget on a mirror that is
	// already misbehaving.
	const attempts = 1
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var hc awsconfig.HTTPClient = awshttp.NewBuildableClient()
	if opts.HTTPClient != nil {
		hc = opts.HTTPClient
	}

	load := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithHTTPClient(hc),
		awsconfig.WithRetryMaxAttempts(attempts),
		// Presigned GET URLs must not demand checksum headers that browsers and container
		// clients never send.
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
	}
	if c.Region != "" {
		load = append(load, awsconfig.WithRegion(c.Region))
	}
	switch {
	case c.CredentialsFile != "":
		// The profile then names a section of that file, not of the shared config.
		creds, err := fileCredentials(ctx, c.CredentialsFile, c.Profile)
		if err != nil {
			return nil, fmt.Errorf("mirror %q: s3: %w", c.Name, err)
		}
		load = append(load, awsconfig.WithCredentialsProvider(creds))
	case c.Profile != "":
		load = append(load, awsconfig.WithSharedConfigProfile(c.Profile))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("mirror %q: s3: load AWS configuration: %w", c.Name, err)
	}
	if cfg.Region == "" {
		if c.Endpoint == "" {
			return nil, fmt.Errorf("mirror %q: s3: region is required (in the mirror or the AWS configuration)", c.Name)
		}
		// S3-compatible services mostly ignore the region, but SigV4 needs one.
		cfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok && opts.HTTPClient == nil {
			// The SDK's client hides its transport, so its idle connections could only time
			// out; one of the Backend's own, over a copy of that transport (AWS_CA_BUNDLE
			// included), lets Close release them. Redirects are answers, as with the SDK's.
			o.HTTPClient = &http.Client{
				Transport:     bc.GetTransport(),
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
		}
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
			// S3-compatible services rarely have wildcard DNS and certificates for
			// <bucket>.<host>; the path style works everywhere.
			o.UsePathStyle = true
		}
	})
	return &Backend{
		name:     c.Name,
		bucket:   c.Bucket,
		client:   client,
		presign:  s3.NewPresignClient(client),
		partSize: opts.PartSize,
		timeout:  timeout,
	}, nil
}

// fileCredentials reads static keys for profile from a shared credentials file, ignoring the
// environment and ~/.aws/config.
func fileCredentials(ctx context.Context, file, profile string) (aws.CredentialsProvider, error) {
	if profile == "" {
		profile = "default"
	}
	sc, err := awsconfig.LoadSharedConfigProfile(ctx, profile, func(o *awsconfig.LoadSharedConfigOptions) {
		o.CredentialsFiles = []string{file}
		o.ConfigFiles = []string{}
	})
	if err != nil {
		return nil, fmt.Errorf("credentials file %s, profile %q: %w", file, profile, err)
	}
	if !sc.Credentials.HasKeys() {
		return nil, fmt.Errorf("credentials file %s, profile %q: no aws_access_key_id and aws_secret_access_key", file, profile)
	}
	return credentials.NewStaticCredentialsProvider(
		sc.Credentials.AccessKeyID, sc.Credentials.SecretAccessKey, sc.Credentials.SessionToken), nil
}

// Stat reports whether key is in the bucket. A 403 is an error wrapping mirrors.ErrDenied, not
// an absence: S3 answers 403 rather than 404 for a missing key when the caller may read objects
// but not list the bucket, and also to credentials it no longer accepts: the caller tells them
// apart (see mirrors.ProbeKey). A 429, and a 503 with Retry-After, is a *mirrors.ThrottledError.
func (b *Backend) Stat(ctx context.Context, key string) (mirrors.Object, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.timeout)
		defer cancel()
	}
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &key})
	if err != nil {
		var re *awshttp.ResponseError
		if errors.As(err, &re) {
			switch status := re.HTTPStatusCode(); status {
			case http.StatusNotFound:
				return mirrors.Object{Exists: false, Size: -1}, nil
			case http.StatusForbidden:
				// The SDK's message is kept: a HEAD answer has no body, but its request ID helps.
				return mirrors.Object{}, fmt.Errorf("stat %s on mirror %q: %w: %w", key, b.name, mirrors.ErrDenied, err)
			default:
				if te := mirrors.Throttled(status, re.Response.Header.Get("Retry-After"), time.Now()); te != nil {
					return mirrors.Object{}, fmt.Errorf("stat %s on mirror %q: %w", key, b.name, te)
				}
			}
		}
		return mirrors.Object{}, fmt.Errorf("stat %s on mirror %q: %w", key, b.name, err)
	}
	size := int64(-1)
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	return mirrors.Object{Exists: true, Size: size}, nil
}

// URL presigns a GET or HEAD of key, valid for ttl. SigV4 binds the method, so a GET URL cannot
// be used for HEAD and the other way round. The expiry returned is the one written into the URL
// (X-Amz-Date + X-Amz-Expires), not a local estimate.
func (b *Backend) URL(ctx context.Context, method, key string, ttl time.Duration) (*url.URL, time.Time, error) {
	if ttl < time.Second || ttl > MaxTTL {
		return nil, time.Time{}, fmt.Errorf("sign %s on mirror %q: ttl %s outside [1s, %s]", key, b.name, ttl, MaxTTL)
	}
	if _, ok := ctx.Deadline(); !ok {
		// Presigning retrieves credentials, which may mean a call to STS or the instance
		// metadata service the first time and whenever they expire.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.timeout)
		defer cancel()
	}
	exp := s3.WithPresignExpires(ttl)
	var (
		req *v4.PresignedHTTPRequest
		err error
	)
	switch method {
	case http.MethodGet:
		req, err = b.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: &key}, exp)
	case http.MethodHead:
		req, err = b.presign.PresignHeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.bucket, Key: &key}, exp)
	default:
		return nil, time.Time{}, fmt.Errorf("sign %s on mirror %q: method %q is not GET or HEAD", key, b.name, method)
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sign %s %s on mirror %q: %w", method, key, b.name, err)
	}
	u, err := url.Parse(req.URL)
	if err != nil {
		// The URL is not quoted: it holds the signature.
		return nil, time.Time{}, fmt.Errorf("sign %s %s on mirror %q: the SDK returned an unparsable URL", method, key, b.name)
	}
	expires, err := Expiry(u)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sign %s %s on mirror %q: %w", method, key, b.name, err)
	}
	return u, expires, nil
}

// Expiry reads when a SigV4 presigned URL stops working from its X-Amz-Date and X-Amz-Expires.
func Expiry(u *url.URL) (time.Time, error) {
	q := u.Query()
	signed, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil {
		return time.Time{}, errors.New("presigned URL has no valid X-Amz-Date")
	}
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs <= 0 {
		return time.Time{}, errors.New("presigned URL has no valid X-Amz-Expires")
	}
	return signed.Add(time.Duration(secs) * time.Second), nil
}
