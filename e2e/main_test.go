// Package e2e runs the built oci-proxy binary against a real distribution registry and pulls
// through it with real clients (docker, podman, skopeo, crane and the go-containerregistry
// library). Components come from scripts/deps.sh; a missing one skips a test locally and fails it
// in CI (CI=true).
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// proxyBin is the service binary built once for all tests; buildErr says why there is none.
// A failed build fails only the tests that need the binary, so the harness's own checks still
// report.
var (
	proxyBin string
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "oci-proxy-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	proxyBin, buildErr = testenv.BuildProxy(dir)
	return testenv.Main(m)
}

// needProxy returns the built binary or fails the test with the build error.
func needProxy(t *testing.T) string {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("build oci-proxy: %v", buildErr)
	}
	return proxyBin
}
