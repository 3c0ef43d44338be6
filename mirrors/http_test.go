package mirrors

import (
	"context"
	"errors"
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
			{key: forbidden, want: Object{Size: -1}},
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
