package mirrors

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestHTTPBackend(t *testing.T) {
	const (
		present   = "blobs/sha256/aaaa"
		forbidden = "blobs/sha256/ffff"
		gone      = "blobs/sha256/dddd"
		broken    = "blobs/sha256/5555"
		slow      = "blobs/sha256/eeee"
	)
	var (
		mu   sync.Mutex
		seen []string
	)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		switch strings.TrimPrefix(r.URL.Path, "/cdn/v1/") {
		case present:
			w.Header().Set("Content-Length", "4096")
		case forbidden:
			w.WriteHeader(http.StatusForbidden)
		case gone:
			w.WriteHeader(http.StatusGone)
		case broken:
			w.WriteHeader(http.StatusInternalServerError)
		case slow:
			select {
			case <-release:
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	defer close(release)

	for _, base := range []string{srv.URL + "/cdn/v1", srv.URL + "/cdn/v1/?token=x#frag"} {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		b := NewHTTPBackend(u, srv.Client())
		tests := []struct {
			key     string
			want    Object
			wantErr string
		}{
			{key: present, want: Object{Exists: true, Size: 4096}},
			{key: "blobs/sha256/0000", want: Object{Size: -1}},
			{key: forbidden, wantErr: "stat blobs/sha256/ffff: access denied (403 Forbidden)"},
			{key: gone, want: Object{Size: -1}},
			{key: broken, wantErr: "stat blobs/sha256/5555: unexpected status 500 Internal Server Error"},
			{key: slow, wantErr: "context deadline exceeded"},
		}
		for _, tt := range tests {
			t.Run(base+"/"+tt.key, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
				defer cancel()
				got, err := b.Stat(ctx, tt.key)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
					}
					if tt.key == slow && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("timeout error %v does not wrap context.DeadlineExceeded", err)
					}
					if denied := errors.Is(err, ErrDenied); denied != (tt.key == forbidden) {
						t.Errorf("error %v: errors.Is(ErrDenied) = %v", err, denied)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Stat (-want +got):\n%s", diff)
				}
			})
		}

		u2, exp, err := b.URL(t.Context(), "GET", present, time.Minute)
		if err != nil || !exp.IsZero() {
			t.Fatalf("URL: %v, expires %v", err, exp)
		}
		if diff := cmp.Diff(srv.URL+"/cdn/v1/"+present, u2.String()); diff != "" {
			t.Errorf("URL (-want +got):\n%s", diff)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seen[0] != "HEAD /cdn/v1/"+present {
		t.Errorf("first request %q, want a HEAD below the base path", seen[0])
	}
}

func TestHTTPBackendTransportError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u, _ := url.Parse(srv.URL + "/")
	srv.Close() // nothing listens any more
	_, err := NewHTTPBackend(u, nil).Stat(t.Context(), "blobs/sha256/aaaa")
	if err == nil {
		t.Fatal("no error from a closed server")
	}
}

// TestHTTPBackendThrottled maps a service's "too many requests" answers: a 429 always, a 503 only
// when it says when to come back; anything else stays an ordinary error, counted against health.
func TestHTTPBackendThrottled(t *testing.T) {
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name       string
		status     int
		retryAfter string
		want       *ThrottledError // nil: not throttling
	}{
		{"429 without Retry-After", http.StatusTooManyRequests, "", &ThrottledError{Status: 429}},
		{"429 with seconds", http.StatusTooManyRequests, "7", &ThrottledError{Status: 429, RetryAfter: 7 * time.Second}},
		{"503 with seconds", http.StatusServiceUnavailable, "3", &ThrottledError{Status: 503, RetryAfter: 3 * time.Second}},
		{"503 with a date", http.StatusServiceUnavailable, date, &ThrottledError{Status: 503, RetryAfter: 90 * time.Second}},
		{"503 without Retry-After", http.StatusServiceUnavailable, "", nil},
		{"503 with a broken Retry-After", http.StatusServiceUnavailable, "soon", nil},
		{"500 with Retry-After", http.StatusInternalServerError, "3", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			u, _ := url.Parse(srv.URL + "/")
			_, err := NewHTTPBackend(u, srv.Client()).Stat(t.Context(), "blobs/sha256/aaaa")
			if err == nil {
				t.Fatal("Stat succeeded, want an error")
			}
			var te *ThrottledError
			if !errors.As(err, &te) {
				te = nil
			}
			// An HTTP date has a resolution of a second: the wait is within one of the asked.
			approx := cmp.Comparer(func(a, b time.Duration) bool { return (a - b).Abs() <= time.Second })
			if diff := cmp.Diff(tt.want, te, approx); diff != "" {
				t.Errorf("throttling of %v (-want +got):\n%s", err, diff)
			}
		})
	}
}

func TestThrottledStatus(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		status     int
		retryAfter string
		want       *ThrottledError
	}{
		{429, "", &ThrottledError{Status: 429}},
		{429, "0", &ThrottledError{Status: 429}},
		{429, "120", &ThrottledError{Status: 429, RetryAfter: 2 * time.Minute}},
		{429, "-5", &ThrottledError{Status: 429}},
		{503, "Sun, 01 Mar 2026 12:00:30 GMT", &ThrottledError{Status: 503, RetryAfter: 30 * time.Second}},
		{503, "Sun, 01 Mar 2026 11:00:00 GMT", &ThrottledError{Status: 503}}, // in the past: ask again now
		{503, "99999999999999999999", nil},
		{503, "-5", nil},
		{503, "", nil},
		{502, "5", nil},
		{200, "5", nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %q", tt.status, tt.retryAfter), func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Throttled(tt.status, tt.retryAfter, now)); diff != "" {
				t.Errorf("Throttled (-want +got):\n%s", diff)
			}
		})
	}
}
