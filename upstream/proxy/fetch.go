package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"

	"github.com/happy-turtle/oci-proxy/oci"
)

// manifestAccept is sent when the client names no manifest type: the OCI and Docker manifests
// and indexes, which every current client accepts. Docker's schema 1 is left out: registries
// stopped serving it.
const manifestAccept = "application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.oci.image.index.v1+json, " +
	"application/vnd.docker.distribution.manifest.v2+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json"

const referrersAccept = "application/vnd.oci.image.index.v1+json"

// liveHeaderNames are passed on from the upstream answer they came with and never replayed from
// the cache: they describe the client's standing with the upstream at that moment.
var liveHeaderNames = [...]string{
	"Retry-After",
	"Ratelimit-Limit",
	"Ratelimit-Remaining",
	"Ratelimit-Reset",
	"Docker-Ratelimit-Source",
}

var errTooLarge = errors.New("body exceeds the limit")

// newRequest builds the upstream request for q with the headers every kind shares.
func newRequest(ctx context.Context, method string, q *Request) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, q.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("upstream request %q: %w", q.URL, err)
	}
	if q.Authorization != "" {
		req.Header.Set("Authorization", q.Authorization)
	}
	switch q.Kind {
	case Manifest:
		if len(q.Accept) == 0 {
			req.Header.Set("Accept", manifestAccept)
		} else {
			req.Header["Accept"] = q.Accept
		}
	case Referrers:
		req.Header.Set("Accept", referrersAccept)
	case Blob:
		// Blob bytes go to the client as the upstream stored them, with their own length and
		// ranges; the transport must not decompress them.
		req.Header.Set("Accept-Encoding", "identity")
		if q.Range != "" {
			req.Header.Set("Range", q.Range)
		}
	}
	return req, nil
}

// fetch GETs q from the upstream and turns the answer into what the client will see. It never
// fails: an unreachable or unusable upstream becomes an error answer with its cause.
func (p *Proxy) fetch(ctx context.Context, q *Request) *answer {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := newRequest(ctx, http.MethodGet, q)
	if err != nil {
		return refusedAnswer(codeUnknown, "internal error", err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return failedAnswer(http.StatusBadGateway, msgUnreachable, fmt.Errorf("GET %s: %w", q.URL, err))
	}
	defer resp.Body.Close()
	live := liveHeaders(resp.Header)
	if resp.StatusCode >= 500 {
		a := failedAnswer(resp.StatusCode, msgUnavailable, fmt.Errorf("GET %s: upstream answered %s", q.URL, resp.Status))
		a.live = live
		return a
	}
	body, err := readBounded(resp.Body, resp.ContentLength, p.maxBody)
	if errors.Is(err, errTooLarge) {
		return refusedAnswer(tooLargeCode(q.Kind), msgTooLarge,
			fmt.Errorf("GET %s: body larger than %d bytes", q.URL, p.maxBody))
	}
	if err != nil {
		return failedAnswer(http.StatusBadGateway, msgUnreachable, fmt.Errorf("GET %s: read body: %w", q.URL, err))
	}
	var a *answer
	if resp.StatusCode/100 != 2 {
		a = passAnswer(resp, body)
	} else {
		switch q.Kind {
		case Manifest:
			a = manifestAnswer(q, resp, body)
		case Tags:
			a = p.tagsAnswer(q, resp, body)
		default:
			a = referrersAnswer(resp, body)
		}
	}
	a.live = live
	return a
}

func tooLargeCode(k Kind) string {
	if k == Tags {
		return codeUnknown
	}
	return codeManifestInvalid
}

// head asks the upstream for a manifest's headers only. An answer without a usable length or
// digest cannot be passed on as a HEAD should be, so it falls back to the GET (and caches that).
func (p *Proxy) head(ctx context.Context, key string, q *Request) result {
	if a, fresh := p.cache.get(key, p.now().UnixNano()); a != nil && fresh {
		return result{a, Hit}
	}
	a, ok := p.fetchHead(ctx, q)
	if !ok {
		v, _, _ := p.flights.Do(key, func() (any, error) { return p.get(ctx, key, q), nil })
		return v.(result)
	}
	return result{a, Miss}
}

// fetchHead returns the answer to a HEAD, or false when only a GET can tell the client what a
// HEAD must (the upstream left out the length or digest).
func (p *Proxy) fetchHead(ctx context.Context, q *Request) (*answer, bool) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := newRequest(ctx, http.MethodHead, q)
	if err != nil {
		return refusedAnswer(codeUnknown, "internal error", err), true
	}
	// The length of the manifest itself, not of some encoding of it.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := p.client.Do(req)
	if err != nil {
		return failedAnswer(http.StatusBadGateway, msgUnreachable, fmt.Errorf("HEAD %s: %w", q.URL, err)), true
	}
	_ = resp.Body.Close()
	live := liveHeaders(resp.Header)
	if resp.StatusCode >= 500 {
		a := failedAnswer(resp.StatusCode, msgUnavailable, fmt.Errorf("HEAD %s: upstream answered %s", q.URL, resp.Status))
		a.live = live
		return a, true
	}
	a := &answer{status: resp.StatusCode, header: make(http.Header, 4), live: live}
	copyHeader(a.header, resp.Header, "Content-Type", "Etag")
	n, lengthOK := contentLength(resp.Header)
	if lengthOK {
		a.header["Content-Length"] = []string{strconv.FormatInt(n, 10)}
	}
	if resp.StatusCode/100 != 2 {
		return a, true
	}
	if lengthOK && n > p.maxBody {
		return refusedAnswer(codeManifestInvalid, msgTooLarge,
			fmt.Errorf("HEAD %s: Content-Length %d exceeds %d", q.URL, n, p.maxBody)), true
	}
	dgst := resp.Header.Get("Docker-Content-Digest")
	if !q.Digest.IsZero() {
		if dgst != "" && dgst != q.Digest.String() {
			return refusedAnswer(codeDigestInvalid, msgMismatch,
				fmt.Errorf("HEAD %s: upstream names digest %q", q.URL, dgst)), true
		}
		dgst = q.Digest.String()
	} else if _, err := oci.ParseDigest(dgst); err != nil {
		dgst = ""
	}
	if dgst == "" || !lengthOK {
		return nil, false
	}
	a.header["Docker-Content-Digest"] = []string{dgst}
	return a, true
}

// manifestAnswer checks a manifest's bytes against the digest asked for, or against the digest
// the upstream names for a tag, and answers with its digest (sha256 of the bytes when the
// upstream named none).
func manifestAnswer(q *Request, resp *http.Response, body []byte) *answer {
	var dgst string
	if !q.Digest.IsZero() {
		dgst = digestOf(q.Digest.Algorithm(), body)
		if dgst != q.Digest.String() {
			return refusedAnswer(codeDigestInvalid, msgMismatch, fmt.Errorf("GET %s: body has digest %s", q.URL, dgst))
		}
	} else {
		dgst = digestOf(oci.SHA256, body)
		if named, err := oci.ParseDigest(resp.Header.Get("Docker-Content-Digest")); err == nil {
			if got := digestOf(named.Algorithm(), body); got != named.String() {
				return refusedAnswer(codeDigestInvalid, msgMismatch,
					fmt.Errorf("GET %s: upstream names digest %s, body has %s", q.URL, named, got))
			}
			dgst = named.String()
		}
	}
	a := bodyAnswer(resp, body)
	copyHeader(a.header, resp.Header, "Content-Type", "Etag")
	a.header["Docker-Content-Digest"] = []string{dgst}
	return a
}

// referrersAnswer passes a referrers index on with the filters the upstream applied. A Link to
// the next page is dropped: the proxy keeps no pagination state for referrers to point it at.
func referrersAnswer(resp *http.Response, body []byte) *answer {
	a := bodyAnswer(resp, body)
	copyHeader(a.header, resp.Header, "Content-Type", "Etag", "Oci-Filters-Applied")
	return a
}

// passAnswer passes an upstream error on as it came: status, body and its type. The upstream's
// WWW-Authenticate stays behind: it names the upstream's token service.
func passAnswer(resp *http.Response, body []byte) *answer {
	a := bodyAnswer(resp, body)
	copyHeader(a.header, resp.Header, "Content-Type")
	return a
}

func bodyAnswer(resp *http.Response, body []byte) *answer {
	h := make(http.Header, 5)
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	return &answer{status: resp.StatusCode, header: h, body: body}
}

// readBounded reads r to the end, refusing more than limit bytes. size is the announced length
// (-1 when unknown): a larger one is refused unread, an exact one is read without regrowing.
func readBounded(r io.Reader, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, errTooLarge
	}
	n := int64(512)
	if size >= 0 {
		n = size + 1 // room to see EOF without growing
	}
	b := make([]byte, 0, min(n, limit+1))
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		m, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if int64(len(b)) > limit {
			return nil, errTooLarge
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// liveHeaders picks the rate-limit headers of an upstream answer; nil when it has none.
func liveHeaders(from http.Header) http.Header {
	var h http.Header
	for _, k := range liveHeaderNames {
		if v := from[k]; len(v) > 0 {
			if h == nil {
				h = make(http.Header, len(liveHeaderNames))
			}
			h[k] = slices.Clip(v)
		}
	}
	return h
}

// copyHeader copies the named headers that from has; names are in canonical form. The value
// slices are shared, clipped: an answer's headers go to every request it serves, and an Add
// on one response must copy rather than write into another's.
func copyHeader(to, from http.Header, names ...string) {
	for _, k := range names {
		if v := from[k]; len(v) > 0 {
			to[k] = slices.Clip(v)
		}
	}
}

// contentLength returns a valid Content-Length header.
func contentLength(h http.Header) (int64, bool) {
	v := h.Get("Content-Length")
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n >= 0
}

// digestOf is the digest of b with algorithm alg, as "<alg>:<hex>".
func digestOf(alg oci.Algorithm, b []byte) string {
	if alg == oci.SHA512 {
		sum := sha512.Sum512(b)
		return string(alg) + ":" + hex.EncodeToString(sum[:])
	}
	sum := sha256.Sum256(b)
	return string(oci.SHA256) + ":" + hex.EncodeToString(sum[:])
}
