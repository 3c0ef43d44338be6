package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ProxyPackage is the import path of the service's binary.
const ProxyPackage = "github.com/happy-turtle/oci-proxy/cmd/oci-proxy"

// ProxyBinEnv names an environment variable that, when set, is the path of an already built
// binary to test instead of building one (a release build, or the binary inside an image).
const ProxyBinEnv = "OCI_PROXY_BIN"

// BuildProxy compiles the service into dir/oci-proxy and returns its path, or returns the binary
// named by $OCI_PROXY_BIN. It is meant for TestMain (which has no testing.TB), once per test
// binary. When the tests run with -race, so is the service built: end-to-end traffic then also
// looks for data races in the server.
func BuildProxy(dir string) (string, error) {
	if p := os.Getenv(ProxyBinEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s: %w", ProxyBinEnv, err)
		}
		return p, nil
	}
	bin := filepath.Join(dir, "oci-proxy")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, ProxyPackage)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %v: %w\n%s", args, err, out)
	}
	return bin, nil
}

// Proxy is a running oci-proxy serve.
type Proxy struct {
	Addr   string // "127.0.0.1:PORT"
	URL    string // "http://127.0.0.1:PORT"
	Config string // path of the config file it was started with
	Proc   *Process
}

// StartProxy writes configYAML to a file, starts `bin serve --config FILE --listen 127.0.0.1:PORT
// --shutdown-grace 0s ARGS...` and waits until /readyz answers 200. The proxy stops with the test;
// its log is shown if the test failed. A test that needs the grace a load balancer gets passes
// its own --shutdown-grace in args (the last one given wins).
func StartProxy(t testing.TB, bin, configYAML string, args ...string) *Proxy {
	t.Helper()
	p := &Proxy{Addr: Addr(t, "127.0.0.1"), Config: filepath.Join(t.TempDir(), "config.yaml")}
	p.URL = "http://" + p.Addr
	if err := os.WriteFile(p.Config, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"serve", "--config", p.Config, "--listen", p.Addr, "--shutdown-grace", "0s"}, args...)
	p.Proc = Start(t, "oci-proxy "+p.Addr, nil, bin, argv...)
	WaitReady(t, p.Proc, p.URL+"/readyz")
	return p
}

// Ref returns repoAndRef ("app:1.0", "app@sha256:...") as a reference through the proxy.
func (p *Proxy) Ref(repoAndRef string) string { return p.Addr + "/" + repoAndRef }

// Logs returns what the proxy printed so far.
func (p *Proxy) Logs() string { return p.Proc.Output() }

// WaitReady polls url until it answers 200, failing the test if proc exits first or 30 s pass.
func WaitReady(t testing.TB, proc *Process, url string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	last := "no answer"
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if proc != nil && proc.Exited() {
			t.Fatalf("%s exited before %s was ready (%s):\n%s", proc.Name, url, last, tail(proc.Output(), 4000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 30s: %s", url, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
