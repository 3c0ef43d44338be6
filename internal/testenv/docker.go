package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Docker is a dockerd started for the tests, with its own data root, socket and CLI configuration,
// so it never touches (or depends on) a system Docker.
type Docker struct {
	Host string // DOCKER_HOST, "unix:///tmp/d.../docker.sock"
	Bin  string // the docker CLI
	Dir  string // holds the socket, data root, exec root and CLI config

	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// Daemons that live as long as the test binary: dockerd takes a second or two to start and
// pulls are what is under test, so one per binary is enough.
var shared struct {
	mu        sync.Mutex
	inMain    bool
	docker    *Docker
	dockerErr error
}

// Main runs the tests of a package that uses StartDockerd and stops the shared daemons afterwards.
// Call it from TestMain: os.Exit(testenv.Main(m)).
func Main(m *testing.M) int {
	shared.mu.Lock()
	shared.inMain = true
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.docker != nil {
		if err := shared.docker.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop dockerd: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		shared.docker = nil
	}
	return code
}

// StartDockerd returns the test binary's dockerd, starting it on first use. It keeps running across
// tests and stops when Main returns, so the package's TestMain must use Main. If dockerd cannot
// start, every later call fails the same way without trying again.
//
// The flags are what makes dockerd 20.10 run on a shared test machine with no Docker service:
//   - --iptables=false --ip6tables=false --bridge=none: no docker0 bridge and no netfilter rules
//     (nothing to clean up, nothing shared with other processes); containers run with
//     --network host or --network none, which is all the tests need;
//   - --storage-driver=vfs: plain directory copies, no overlay or device-mapper kernel support and
//     no mounts left behind; slow for big images, irrelevant for test images of a few KiB;
//   - --data-root, --exec-root, --pidfile in a private directory: no clash with another dockerd;
//   - --config-file with an empty file: the machine's /etc/docker/daemon.json is not read;
//   - a short socket path directly under /tmp: dockerd puts containerd's socket in the exec root,
//     and unix socket paths are limited to 108 bytes, which a t.TempDir path can exceed.
//
// Registries on 127.0.0.0/8 are insecure (plain HTTP) by default in dockerd, so no
// --insecure-registry flag is needed for loopback registries or the proxy.
func StartDockerd(t testing.TB) *Docker {
	t.Helper()
	dockerd := Need(t, "dockerd", "apt-get install -y docker.io")
	cli := Need(t, "docker", "apt-get install -y docker.io")
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.inMain {
		t.Fatal("testenv.StartDockerd needs the package's TestMain to call testenv.Main, which stops dockerd")
	}
	if shared.docker == nil && shared.dockerErr == nil {
		shared.docker, shared.dockerErr = startDockerd(dockerd, cli)
	}
	if shared.dockerErr != nil {
		t.Fatalf("dockerd: %v", shared.dockerErr)
	}
	d := shared.docker
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- dockerd output (tail) ---\n%s", tail(d.out.String(), 6000))
		}
	})
	return d
}

func startDockerd(dockerd, cli string) (*Docker, error) {
	dir, err := os.MkdirTemp("/tmp", "d")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "docker.sock")
	d := &Docker{Host: "unix://" + sock, Bin: cli, Dir: dir, out: &syncBuffer{}, done: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(dir, "config"), 0o700); err != nil {
		return nil, err
	}
	// An empty daemon configuration: /etc/docker/daemon.json, if the machine has one, may set
	// mirrors or options that clash with the flags below.
	daemonJSON := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(daemonJSON, []byte("{}\n"), 0o600); err != nil {
		return nil, err
	}
	d.cmd = exec.Command(dockerd,
		"--config-file="+daemonJSON,
		"--iptables=false", "--ip6tables=false", "--bridge=none",
		"--storage-driver=vfs",
		"--data-root="+filepath.Join(dir, "data"),
		"--exec-root="+filepath.Join(dir, "exec"),
		"--pidfile="+filepath.Join(dir, "docker.pid"),
		"--host="+d.Host,
	)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	// Its own process group: dockerd starts containerd and shims, and a stuck shutdown must be
	// able to end all of them without touching anything else.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", dockerd, err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()

	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := c.Get("http://docker/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d, nil
			}
		}
		select {
		case <-d.done:
			out := d.out.String()
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("exited before answering (%v):\n%s", d.err, tail(out, 6000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = d.stop()
			return nil, fmt.Errorf("no answer on %s within 60s:\n%s", sock, tail(d.out.String(), 6000))
		}
	}
}

// stop ends dockerd (SIGTERM: it stops its containers and containerd), kills the whole process
// group if that takes more than 20 s, and removes its directory.
func (d *Docker) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
	// Leftover containerd shims would keep files busy; they are in dockerd's group.
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	// dockerd leaves the bind mount of its default network namespace (exec-root/netns/default)
	// behind once it has run a container, and a mount point cannot be removed.
	if err := unmountUnder(d.Dir); err != nil {
		return err
	}
	return os.RemoveAll(d.Dir)
}

// unmountUnder lazily unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if err := syscall.Unmount(points[i], syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", points[i], err)
		}
	}
	return nil
}

func (d *Docker) env() []string {
	return []string{
		"DOCKER_HOST=" + d.Host,
		// The CLI must not read credentials or contexts of the machine's user.
		"DOCKER_CONFIG=" + filepath.Join(d.Dir, "config"),
		// The classic builder: BuildKit would need its own network access and cache.
		"DOCKER_BUILDKIT=0",
	}
}

// Cmd runs the docker CLI with args within timeout and returns its output; failure fails the test.
func (d *Docker) Cmd(t testing.TB, timeout time.Duration, args ...string) string {
	t.Helper()
	return Run(t, timeout, d.env(), d.Bin, args...)
}

// CmdErr is Cmd that returns the error instead of failing.
func (d *Docker) CmdErr(timeout time.Duration, args ...string) (string, error) {
	return RunErr(timeout, d.env(), d.Bin, args...)
}

// Pull pulls ref and returns the digest dockerd recorded for it (for an index: the index's
// digest). dockerd skips layers it already has, so remove an earlier pull of the same image
// (Rmi) when the blobs must be fetched again.
func (d *Docker) Pull(t testing.TB, ref string) Pulled {
	t.Helper()
	d.Cmd(t, PullTimeout, "pull", "--quiet", ref)
	return Pulled{Digest: d.ImageDigest(t, ref)}
}

// ImageDigest returns the digest in the image's RepoDigests entry for ref's repository.
func (d *Docker) ImageDigest(t testing.TB, ref string) string {
	t.Helper()
	out := d.Cmd(t, time.Minute, "image", "inspect", "--format", "{{range .RepoDigests}}{{println .}}{{end}}", ref)
	repo := repoOf(ref)
	for _, l := range strings.Fields(out) {
		if r, dg, ok := strings.Cut(l, "@"); ok && r == repo {
			return dg
		}
	}
	t.Fatalf("docker image inspect %s: no RepoDigest for %s in %q", ref, repo, out)
	return ""
}

// Rmi removes images; references that do not exist are not an error.
func (d *Docker) Rmi(t testing.TB, refs ...string) {
	t.Helper()
	for _, r := range refs {
		out, err := d.CmdErr(time.Minute, "rmi", "--force", r)
		if err != nil && !strings.Contains(out, "No such image") {
			t.Fatalf("docker rmi %s: %v\n%s", r, err, out)
		}
	}
}

// Build builds the docker build context dir as tag with the classic builder; args go before the
// context (e.g. "--build-arg", "VERSION=1.2.3"). The image is removed when the test ends.
func (d *Docker) Build(t testing.TB, dir, tag string, args ...string) string {
	t.Helper()
	a := append([]string{"build", "--tag", tag}, args...)
	out := d.Cmd(t, 5*time.Minute, append(a, dir)...)
	t.Cleanup(func() { d.Rmi(t, tag) })
	return out
}

// Run runs `docker run --rm args...` to completion and returns its output. dockerd has no bridge
// network: pass --network host or --network none.
func (d *Docker) Run(t testing.TB, args ...string) string {
	t.Helper()
	return d.Cmd(t, 2*time.Minute, append([]string{"run", "--rm"}, args...)...)
}

// RunDetached starts `docker run --detach args...` and returns the container id. The container is
// removed when the test ends; its logs are shown if the test failed.
func (d *Docker) RunDetached(t testing.TB, args ...string) string {
	t.Helper()
	id := strings.TrimSpace(d.Cmd(t, 2*time.Minute, append([]string{"run", "--detach"}, args...)...))
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := d.CmdErr(30*time.Second, "logs", id)
			t.Logf("--- logs of container %.12s ---\n%s", id, tail(logs, 8000))
		}
		if out, err := d.CmdErr(time.Minute, "rm", "--force", id); err != nil {
			t.Errorf("docker rm %s: %v\n%s", id, err, out)
		}
	})
	return id
}
