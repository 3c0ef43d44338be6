package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// blobHeaderNames are passed on with blob bytes.
var blobHeaderNames = [...]string{
	"Content-Length",
	"Content-Type",
	"Docker-Content-Digest",
	"Etag",
	"Accept-Ranges",
	"Content-Range",
}

// serveBlob answers a blob that no mirror holds. When the upstream redirects to its storage
// (GHCR and Docker Hub do), that redirect goes to the client as a 307; when it serves the bytes
// itself, they are streamed through. The upstream gets Timeout to answer and then Timeout
// between reads: a layer of gigabytes cannot have an overall deadline, a stalled one can.
func (p *Proxy) serveBlob(w http.ResponseWriter, r *http.Request, q *Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	idle := time.AfterFunc(p.timeout, cancel)
	defer idle.Stop()
	req, err := newRequest(ctx, q.Method, q)
	if err != nil {
		p.fail(w, r, q, refusedAnswer(codeUnknown, "internal error", err))
		return
	}
	resp, err := p.blobClient.Do(req)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away
		}
		p.fail(w, r, q, failedAnswer(http.StatusBadGateway, msgUnreachable, fmt.Errorf("%s %s: %w", q.Method, q.URL, err)))
		return
	}
	defer resp.Body.Close()
	live := liveHeaders(resp.Header)
	switch s := resp.StatusCode; {
	case s == http.StatusMovedPermanently || s == http.StatusFound || s == http.StatusSeeOther ||
		s == http.StatusTemporaryRedirect || s == http.StatusPermanentRedirect:
		loc, err := redirectTarget(resp.Header.Get("Location"))
		if err != nil {
			p.fail(w, r, q, refusedAnswer(codeUnknown, msgBadRedirect, fmt.Errorf("%s %s: %w", q.Method, q.URL, err)))
			return
		}
		h := w.Header()
		for k, v := range live {
			h[k] = v
		}
		h.Set("Location", loc)
		w.WriteHeader(http.StatusTemporaryRedirect)
	case s/100 == 2:
		h := w.Header()
		for k, v := range live {
			h[k] = v
		}
		copyHeader(h, resp.Header, blobHeaderNames[:]...)
		w.WriteHeader(s)
		if q.Method == http.MethodHead {
			return
		}
		n, err := p.copyBlob(w, resp.Body, idle)
		p.obs.BlobBytes(n)
		if err != nil && r.Context().Err() == nil {
			p.log.LogAttrs(r.Context(), slog.LevelWarn, "blob stream broke off",
				slog.String("route", q.Kind.String()), slog.String("repository", q.ClientName),
				slog.String("reference", q.reference()), slog.Int64("bytes", n), slog.Any("err", err))
		}
	case s >= 500:
		a := failedAnswer(s, msgUnavailable, fmt.Errorf("%s %s: upstream answered %s", q.Method, q.URL, resp.Status))
		a.live = live
		p.fail(w, r, q, a)
	default:
		size := resp.ContentLength
		if q.Method == http.MethodHead {
			size = -1 // the length of a body that was not sent
		}
		body, err := readBounded(resp.Body, size, p.maxBody)
		var a *answer
		switch {
		case errors.Is(err, errTooLarge):
			a = refusedAnswer(codeUnknown, msgTooLarge, fmt.Errorf("%s %s: error body larger than %d bytes", q.Method, q.URL, p.maxBody))
		case err != nil:
			a = failedAnswer(http.StatusBadGateway, msgUnreachable, fmt.Errorf("%s %s: read body: %w", q.Method, q.URL, err))
		default:
			a = passAnswer(resp, body)
			if q.Method == http.MethodHead {
				if n, ok := contentLength(resp.Header); ok {
					a.header["Content-Length"] = []string{strconv.FormatInt(n, 10)}
				}
			}
		}
		a.live = live
		p.fail(w, r, q, a)
	}
}

// fail writes an answer that carries no blob, logging its cause when the proxy made it.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, q *Request, a *answer) {
	p.logCause(r, q, a)
	p.write(w, q, a, Miss)
}

// copyBlob streams body to w through a pooled buffer, pushing the idle deadline back on every
// read that brings bytes.
func (p *Proxy) copyBlob(w io.Writer, body io.Reader, idle *time.Timer) (int64, error) {
	buf := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(buf)
	// Neither side may bypass the buffer: http's ReadFrom would pick its own, and the idle
	// deadline lives in the reader.
	return io.CopyBuffer(writerOnly{w}, &idleReader{r: body, t: idle, d: p.timeout}, *buf)
}

type writerOnly struct{ io.Writer }

// idleReader resets t to d after every read that returns bytes.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (ir *idleReader) Read(b []byte) (int, error) {
	n, err := ir.r.Read(b)
	if n > 0 {
		ir.t.Reset(ir.d)
	}
	return n, err
}

// redirectTarget accepts the upstream's Location only as an absolute http(s) URL with a host and
// no user information, and returns it re-encoded: whatever it is, it came from the upstream,
// and it goes out only in a form that cannot carry anything but a URL.
func redirectTarget(loc string) (string, error) {
	if loc == "" {
		return "", errors.New("redirect without Location")
	}
	// The Location may be a signed storage URL: the errors name what is wrong, never the URL.
	u, err := url.Parse(loc)
	if err != nil {
		return "", errors.New("redirect Location does not parse as a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", errors.New("redirect Location is not an absolute http(s) URL with a host")
	}
	return u.String(), nil
}
