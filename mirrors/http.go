package mirrors

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HTTPBackend is the `http` provider: blobs served by any public web server or CDN under a base
// URL. It signs nothing, so its URLs never expire.
type HTTPBackend struct {
	base   *url.URL
	client *http.Client
}

// NewHTTPBackend returns a backend for blobs under baseURL, which keeps its path ("/" is appended
// when missing, so that a key is always below it). Every presence check goes through client, which
// callers share between backends so that connections are reused; nil means http.DefaultClient.
func NewHTTPBackend(baseURL *url.URL, client *http.Client) *HTTPBackend {
	u := *baseURL
	// Query and fragment of the configured URL would end up after the key, and user info would
	// be sent to every client: none of them belongs in a redirect.
	u.RawQuery, u.Fragment, u.RawFragment, u.User = "", "", "", nil
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	if client == nil {
		client = http.DefaultClient
	}
	return &HTTPBackend{base: &u, client: client}
}

// object returns the URL of key. Keys use only [a-z0-9/] and the configured prefix, so joining the
// paths needs no escaping beyond what url.URL does itself.
func (b *HTTPBackend) object(key string) *url.URL {
	u := *b.base
	u.Path += key
	if u.RawPath != "" {
		u.RawPath += key
	}
	return &u
}

// Stat sends a HEAD request for key. A 403 is ErrDenied, which the selector counts as absent:
// public buckets behind a CDN commonly answer 403 for objects that do not exist.
func (b *HTTPBackend) Stat(ctx context.Context, key string) (Object, error) {
	u := b.object(key)
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u.String(), nil)
	if err != nil {
		return Object{}, fmt.Errorf("stat %s: %w", key, err)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return Object{}, fmt.Errorf("stat %s: %w", key, err)
	}
	// A HEAD answer has no body, but a misbehaving server may send one; draining a little keeps
	// the connection reusable without reading an unbounded amount.
	_, _ = io.CopyN(io.Discard, resp.Body, 4096)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return Object{Exists: true, Size: resp.ContentLength}, nil
	case http.StatusNotFound, http.StatusGone:
		return Object{Exists: false, Size: -1}, nil
	case http.StatusForbidden:
		return Object{}, fmt.Errorf("stat %s: %w (%s)", key, ErrDenied, resp.Status)
	}
	if te := Throttled(resp.StatusCode, resp.Header.Get("Retry-After"), time.Now()); te != nil {
		return Object{}, fmt.Errorf("stat %s: %w", key, te)
	}
	return Object{}, fmt.Errorf("stat %s: unexpected status %s", key, resp.Status)
}

// URL returns the object's URL for any method; it is unsigned and never expires.
func (b *HTTPBackend) URL(_ context.Context, _, key string, _ time.Duration) (*url.URL, time.Time, error) {
	return b.object(key), time.Time{}, nil
}
