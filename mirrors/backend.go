// Package mirrors holds the mirror table and chooses, for a located client and a blob, the mirror
// that should serve it: scopes, ranking, presence and health. The storage services themselves live
// behind the Backend interface, implemented in leaf packages (mirrors/s3, mirrors/gcs, and the plain
// HTTP backend here) so that the choice can be tested without any cloud SDK.
package mirrors

import (
	"context"
	"io"
	"net/url"
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
	// Stat reports whether key is stored. An absent object is (Object{Exists: false}, nil); an error
	// means the backend could not answer and says nothing about presence.
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
