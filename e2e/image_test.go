package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// repoRoot returns the module's root directory, where scripts/ and the Dockerfile are.
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: %q, %v", gomod, err)
	}
	return filepath.Dir(gomod)
}

// TestServiceImage builds the service image the way a release does (scripts/build.sh, then the
// Dockerfile), and checks the image itself: it reports its version, and as a container with the
// configuration mounted it serves pulls.
func TestServiceImage(t *testing.T) {
	d := testenv.StartDockerd(t)
	const version = "0.0.0-e2e"
	ctx := filepath.Join(t.TempDir(), "dist")
	testenv.Run(t, 10*time.Minute, []string{"VERSION=" + version, "COMMIT=e2e", "DATE=2026-01-02T03:04:05Z"},
		filepath.Join(repoRoot(t), "scripts", "build.sh"), ctx)
	for _, f := range []string{"oci-proxy", "ca-certificates.crt", "Dockerfile"} {
		if _, err := os.Stat(filepath.Join(ctx, f)); err != nil {
			t.Fatalf("scripts/build.sh did not make a build context: %v", err)
		}
	}
	image := "oci-proxy-e2e:" + version
	d.Build(t, ctx, image, "--build-arg", "VERSION="+version)

	t.Run("version", func(t *testing.T) {
		out := d.Run(t, "--network", "none", image, "version")
		if !strings.Contains(out, version) {
			t.Errorf("docker run %s version printed %q, want it to contain %q", image, out, version)
		}
		label := strings.TrimSpace(d.Cmd(t, time.Minute, "image", "inspect", "--format",
			`{{index .Config.Labels "org.opencontainers.image.version"}} {{.Config.User}}`, image))
		if want := version + " 65534:65534"; label != want {
			t.Errorf("image version label and user %q, want %q", label, want)
		}
	})

	t.Run("serve", func(t *testing.T) {
		reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
		want := reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")

		// The container runs as nobody: the mounted directory and file must be readable by it,
		// unlike the 0700 directories t.TempDir makes.
		cfgDir := filepath.Join(t.TempDir(), "config")
		if err := os.Mkdir(cfgDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Dir(cfgDir), 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf("upstream: %s/v2/%s/\n", reg.URL, upstreamPrefix)
		if err := os.WriteFile(filepath.Join(cfgDir, "config.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		addr := testenv.Addr(t, "127.0.0.1")
		// --network host: the proxy must reach the registry on 127.0.0.2 and docker must reach
		// the proxy on 127.0.0.1, both on the host's loopback.
		d.RunDetached(t, "--network", "host", "--volume", cfgDir+":/etc/oci-proxy:ro",
			image, "serve", "--config", "/etc/oci-proxy/config.yaml", "--listen", addr)
		testenv.WaitReady(t, nil, "http://"+addr+"/readyz")

		ref := addr + "/app:1.0"
		d.Rmi(t, ref)
		t.Cleanup(func() { d.Rmi(t, ref) })
		if got := d.Pull(t, ref).Digest; got != want.Digest {
			t.Errorf("docker pull %s through the containerized proxy: digest %s, want %s", ref, got, want.Digest)
		}
	})
}
