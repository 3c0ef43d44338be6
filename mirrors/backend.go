// Package mirrors holds the mirror table and chooses, for a located client and a blob, the mirror
// that should serve it: scopes, ranking, presence and health. The storage services themselves live
// behind the Backend interface, implemented in leaf packages (mirrors/s3, mirrors/gcs, and the plain
// HTTP backend here) so that the choice can be tested without any cloud SDK.
package mirrors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/happy-turtle/oci-proxy/oci"
)

// Object is what a presence check learns about a stored blob.
type Object struct {
	Exists bool
	Size   int64 // -1 when the backend did not say
}

// Backend is one storage service holding blobs under the shared key layout (see Key).
type Backend interface {
	// Stat reports whether key is stored. An absent object (404, or 410 for the http provider) is
	// (Object{Exists: false}, nil); an error means the backend could not answer and says nothing
	// about presence. Two errors have a meaning of their own, and callers match them with
	// errors.Is and errors.As:
	//   - a refusal (HTTP 403) wraps ErrDenied, since it does not say whether the object is
	//     there: a reader that may not list the bucket gets it for a missing key too;
	//   - a request the service is too busy to answer (HTTP 429, or 503 with Retry-After) is a
	//     *ThrottledError, which says when to ask again.
	// A backend that reports a refusal as an absence only keeps its mirror from ever being taken
	// out for refused credentials.
	Stat(ctx context.Context, key string) (Object, error)
	// URL returns a URL a client may use with method (GET or HEAD) for about ttl, and when it
	// expires. Public backends return an unsigned URL and the zero time.
	URL(ctx context.Context, method, key string, ttl time.Duration) (*url.URL, time.Time, error)
}

// Key is the object key of a blob in every mirror: prefix + "<algorithm>/<hex>". The same layout is
// written by `oci-proxy sync`.
func Key(prefix string, d oci.Digest) string {
	return prefix + string(d.Algorithm()) + "/" + d.Hex()
}

// Writer is a Backend that `oci-proxy sync` can copy blobs into. Public http mirrors are not
// writers: something else fills them.
type Writer interface {
	Backend
	// Put stores size bytes read from body under key, replacing any object there. It streams:
	// blobs can be gigabytes.
	Put(ctx context.Context, key string, body io.Reader, size int64) error
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// ErrDenied is wrapped by the error of a Stat the storage service refused (HTTP 403). The
// selector counts it as absent for a blob (S3 answers 403 rather than 404 for a missing key to a
// reader that may not list the bucket, and a CDN in front of a private bucket does the same), and
// as refused credentials for ProbeKey, which `oci-proxy sync` writes into every writable mirror,
// unless a blob of the mirror can still be read.
var ErrDenied = errors.New("access denied")

// ThrottledError is a storage service's answer that it is taking too many requests: a 429, or a
// 503 that says when to come back (Retry-After). It says nothing about the object, and it is not
// a failure of the mirror: the selector makes no more presence checks there until RetryAfter has
// passed (MinPause when zero, MaxPause at most) and leaves its health alone. A 503 without
// Retry-After is an ordinary error: an overloaded service and a broken one both send it.
type ThrottledError struct {
	Status     int           // the HTTP status: 429 or 503
	RetryAfter time.Duration // from Retry-After; 0 when the service did not say
}

func (e *ThrottledError) Error() string {
	msg := "throttled (" + strconv.Itoa(e.Status) + " " + http.StatusText(e.Status) + ")"
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(", retry after %v", e.RetryAfter)
	}
	return msg
}

// Throttled returns the *ThrottledError for an answer with status and the Retry-After header
// value retryAfter, or nil when the answer is not throttling: a status other than 429 and 503,
// or a 503 without a usable Retry-After. Backends call it on every status they do not expect.
func Throttled(status int, retryAfter string, now time.Time) *ThrottledError {
	if status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable {
		return nil
	}
	d, ok := parseRetryAfter(retryAfter, now)
	if status == http.StatusServiceUnavailable && !ok {
		return nil
	}
	return &ThrottledError{Status: status, RetryAfter: d}
}

// parseRetryAfter reads a Retry-After value: whole seconds, or an HTTP date (RFC 9110 10.2.3).
// A date in the past, or "0", is a valid value asking for no wait at all.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		// Bounded long before the multiplication could overflow; the selector caps it anyway.
		return time.Duration(min(secs, 1<<20)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// Pacing bounds for a *ThrottledError.
const (
	// MinPause is how long checks pause after a throttled answer that gave no (or a zero)
	// Retry-After: long enough for a service's request-rate window to move on.
	MinPause = time.Second
	// MaxPause caps Retry-After: a service asking for more is treated as asking for a minute, so
	// that a mistaken or hostile header cannot keep a mirror unused for hours, and blobs already
	// known to be there are served from it meanwhile anyway.
	MaxPause = time.Minute
)

// ProbeKey is the object `oci-proxy sync` writes into every mirror it fills, at the start of each
// run, and that the selector's background probe asks about to learn whether the storage service
// still accepts the proxy's credentials: the refusal of an object known to be there is a
// credentials failure, where a refused blob may just be missing. It cannot collide with a blob:
// digest algorithms start with a letter or digit.
func ProbeKey(prefix string) string { return prefix + "_oci-proxy/probe" }

// ProbeContent is what `oci-proxy sync` stores under ProbeKey.
const ProbeContent = "oci-proxy probe\n"
