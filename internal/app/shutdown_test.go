package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// On shutdown /readyz answers 503 at once, requests are still served for the grace, and then Run
// returns.
func TestShutdownGrace(t *testing.T) {
	addr := testenv.Addr(t, "127.0.0.1")
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("upstream: https://registry.example/v2/\nlisten: %q\n", addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadServeConfig(path, "")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(t.Context(), cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	const grace = 700 * time.Millisecond
	svc.SetShutdownGrace(grace)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	c := &http.Client{Timeout: 2 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	status := func(path string) int {
		resp, err := c.Get("http://" + addr + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for status("/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the service never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopped := time.Now()
	stop()
	time.Sleep(50 * time.Millisecond)
	if got := status("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the grace = %d, want 503", got)
	}
	if got := status("/v2/app/manifests/1.0"); got != http.StatusTemporaryRedirect {
		t.Errorf("a manifest request during the grace = %d, want 307", got)
	}
	select {
	case err := <-done:
		if waited := time.Since(stopped); waited < grace {
			t.Errorf("Run returned after %v, before the grace of %v", waited, grace)
		}
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the grace")
	}
	if got := status("/readyz"); got != 0 {
		t.Errorf("the listener still answers after Run returned: %d", got)
	}
}

// With admin.listen, /metrics and /_/resolve move off the public listener; Go's profiles are
// only ever served there.
func TestAdminListener(t *testing.T) {
	addr, admin := testenv.Addr(t, "127.0.0.1"), testenv.Addr(t, "127.0.0.1")
	path := filepath.Join(t.TempDir(), "config.yaml")
	yaml := fmt.Sprintf("upstream: https://registry.example/v2/\nlisten: %q\nadmin: {enabled: true, listen: %q}\n", addr, admin)
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadServeConfig(path, "")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(t.Context(), cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { stop(); <-done }()
	get := func(u string) int {
		for range 100 {
			resp, err := http.Get(u)
			if err == nil {
				resp.Body.Close()
				return resp.StatusCode
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s never answered", u)
		return 0
	}
	for _, tc := range []struct {
		url  string
		want int
	}{
		{"http://" + admin + "/metrics", 200},
		{"http://" + admin + "/_/resolve?ip=192.0.2.1", 200},
		{"http://" + addr + "/metrics", 404},
		{"http://" + addr + "/_/resolve?ip=192.0.2.1", 404},
		{"http://" + addr + "/v2/", 200},
		{"http://" + admin + "/debug/pprof/heap", 200},
		{"http://" + admin + "/debug/pprof/", 200},
		{"http://" + addr + "/debug/pprof/heap", 404},
	} {
		if got := get(tc.url); got != tc.want {
			t.Errorf("GET %s = %d, want %d", tc.url, got, tc.want)
		}
	}
}
