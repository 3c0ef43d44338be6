package testenv

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Creds are a registry user's credentials, as the pull clients take them.
type Creds struct{ User, Password string }

// DockerConfigDir writes a Docker config.json holding c for registry (host:port) into a new
// directory and returns it, for DOCKER_CONFIG.
func DockerConfigDir(t testing.TB, registry string, c Creds) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{"auths": map[string]any{
		registry: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(c.User + ":" + c.Password))},
	}}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Login runs `docker login` to registry as c; the credentials are removed when the test ends.
func (d *Docker) Login(t testing.TB, registry string, c Creds) {
	t.Helper()
	out, err := RunErrInput(time.Minute, d.env(), strings.NewReader(c.Password), d.Bin, "login", "--username", c.User, "--password-stdin", registry)
	if err != nil {
		t.Fatalf("docker login %s: %v\n%s", registry, err, out)
	}
	t.Cleanup(func() { _, _ = d.CmdErr(time.Minute, "logout", registry) })
}

// CtrPull pulls ref (every platform) with containerd's own client, ctr, from the containerd
// that dockerd runs, as user c (nil: anonymous), and returns the digest containerd recorded.
func (d *Docker) CtrPull(t testing.TB, ref string, c *Creds) Pulled {
	t.Helper()
	ctr := Need(t, "ctr", "apt-get install -y docker.io")
	sock := filepath.Join(d.Dir, "exec", "containerd", "containerd.sock")
	base := []string{"--address", sock, "--namespace", "oci-proxy-test"}
	args := append(append([]string{}, base...), "images", "pull", "--plain-http", "--all-platforms")
	if c != nil {
		args = append(args, "--user", c.User+":"+c.Password)
	}
	Run(t, PullTimeout, nil, ctr, append(args, ref)...)
	t.Cleanup(func() {
		_, _ = RunErr(time.Minute, nil, ctr, append(append([]string{}, base...), "images", "rm", ref)...)
	})
	out := Run(t, time.Minute, nil, ctr, append(append([]string{}, base...), "images", "ls")...)
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == ref {
			return Pulled{Digest: f[2]}
		}
	}
	t.Fatalf("ctr images ls has no %s:\n%s", ref, out)
	return Pulled{}
}
