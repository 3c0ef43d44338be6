package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCommands(t *testing.T) {
	t.Setenv("UpstreamRegistry", "")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("upstream: https://x.example/acme/\nlisten: 1\nextra: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bare := filepath.Join(t.TempDir(), "bare.yaml")
	if err := os.WriteFile(bare, []byte("upstream: https://x.example/v2/acme/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"no args", nil, 2, "Usage"},
		{"unknown", []string{"push"}, 2, `unknown command "push"`},
		{"version", []string{"version"}, 0, "oci-proxy dev (commit unknown"},
		{"validate good", []string{"validate", "--config", "../../config.yaml"}, 0, "ok (upstream https://us-central1-docker.pkg.dev/v2/oci-proxy/oci-proxy-images/"},
		{"validate bad", []string{"validate", "--config", bad}, 1, bad + `:3: unknown key "extra"`},
		{"validate missing", []string{"validate", "--config", "/nonexistent.yaml"}, 1, "nonexistent.yaml"},
		{"validate stray arg", []string{"validate", "x"}, 2, "unexpected argument"},
		{"serve without config", []string{"serve"}, 1, "no configuration"},
		{"serve bad log format", []string{"serve", "--log-format", "xml"}, 1, "--log-format"},
		{"sync without repositories", []string{"sync", "--config", bare}, 1, "sync.repositories is empty"},
		{"sync bad every", []string{"sync", "--config", "../../config.yaml", "--every", "10ms"}, 2, "--every"},
		{"demand without from", []string{"demand", "--config", "../../config.yaml"}, 2, "--from is required"},
		{"demand bad source", []string{"demand", "--config", "../../config.yaml", "--from", "grafana=x"}, 2, "want prometheus=URL"},
		{"sync demand bad source", []string{"sync", "--config", "../../config.yaml", "--demand", "ftp://x"}, 2, "want prometheus=URL"},
		{"sync demand and listen", []string{"sync", "--config", "../../config.yaml", "--demand", "http://x", "--listen", ":0"}, 2, "--listen"},
		{"sync demand min", []string{"sync", "--config", "../../config.yaml", "--demand", "http://x", "--demand-min", "0"}, 2, "--demand-min"},
		{"resolve bad ip", []string{"resolve", "--config", "../../config.yaml", "--ip", "nope"}, 2, "--ip must be an IP address"},
		{"resolve bad digest", []string{"resolve", "--config", "../../config.yaml", "--ip", "1.2.3.4", "--digest", "sha256:1"}, 2, "--digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(out+errs, tc.contains) {
				t.Errorf("exit %d, output:\n%s%s\nwant exit %d containing %q", code, out, errs, tc.code, tc.contains)
			}
		})
	}
}

func TestResolveJSON(t *testing.T) {
	code, out, errs := runCmd(t, "resolve", "--config", "../../config.yaml", "--ip", "89.160.20.112", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var e struct {
		Client struct{ Addr string }
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.Client.Addr != "89.160.20.112" {
		t.Errorf("resolve --json = %s (%v)", out, err)
	}
}

// TestDemandFromProxy reads a proxy's /_/demand and prints the analysis for the repository's
// config.yaml.
func TestDemandFromProxy(t *testing.T) {
	t.Setenv("UpstreamRegistry", "")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_/demand" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"half_life_seconds":3600,"misses":[{"mirror":"eu-west","repository":"app","digest":"sha256:aa","count":3}],` +
			`"served":[{"continent":"AS","mirror":"eu-west","requests":4}],` +
			`"distance":[{"continent":"AS","bounds":[1000,8000,12000],"buckets":[0,4,4],"count":4}]}`))
	}))
	defer srv.Close()
	code, out, errs := runCmd(t, "demand", "--config", "../../config.yaml", "--from", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{srv.URL + "/_/demand", "app 3", "1. AS:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, errs = runCmd(t, "demand", "--config", "../../config.yaml", "--from", srv.URL, "--json")
	var a struct {
		NewMirror []struct{ Continent string } `json:"new_mirror"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &a) != nil || len(a.NewMirror) != 1 || a.NewMirror[0].Continent != "AS" {
		t.Errorf("--json: exit %d, %s%s", code, out, errs)
	}
}
