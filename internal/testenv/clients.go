package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// PullTimeout bounds one pull by any client: small test images on loopback take well under a
// second, so hitting it means a client is stuck (a redirect loop, a hung connection), not slow.
const PullTimeout = 2 * time.Minute

// Pulled is what a client fetched.
type Pulled struct {
	// Digest is the digest of the top-level manifest (or index) the client got, computed from
	// its bytes where the client stores them, else as the client reports it.
	Digest string
	// Dir holds the client's copy (skopeo dir:, crane OCI layout); "" for daemon-based clients.
	Dir string
	// Blobs are the digests of the blobs found in Dir, sorted; nil when the client keeps no files.
	Blobs []string
	// Manifests are the digests of an index's images the client stored, sorted (skopeo only).
	Manifests []string
}

var hexName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// blobsIn lists files named by a sha256 hex digest in dir, verifying each file's content hashes
// to its name: a redirect to the wrong blob must not go unnoticed just because the client trusts it.
func blobsIn(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() || !hexName.MatchString(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256Hex(b); got != e.Name() {
			t.Fatalf("blob %s in %s has content with sha256 %s", e.Name(), dir, got)
		}
		out = append(out, "sha256:"+e.Name())
	}
	sort.Strings(out)
	return out
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// SHA256Digest returns "sha256:<hex>" of b.
func SHA256Digest(b []byte) string { return "sha256:" + sha256Hex(b) }

// Skopeo runs skopeo against plain-HTTP registries on loopback.
type Skopeo struct{ Bin string }

// NewSkopeo finds skopeo (see Need).
func NewSkopeo(t testing.TB) *Skopeo {
	t.Helper()
	return &Skopeo{Bin: Need(t, "skopeo", "apt-get install -y skopeo")}
}

// --insecure-policy: the tests must not depend on /etc/containers/policy.json being present.
func (s *Skopeo) run(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, PullTimeout, nil, s.Bin, append([]string{"--insecure-policy"}, args...)...)
}

// Copy copies ref (every platform of an index: --all) to a dir: directory. For an image, Digest
// is that of the stored manifest. For an index, skopeo 1.9 stores a re-serialized index (it drops
// fields such as artifactType, and --preserve-digests fails with "Manifest list must be
// converted"), so Digest is that of skopeo's rewrite, not of the pulled index: check the index's
// digest with RawManifest, and its images with Manifests, which skopeo stores unchanged.
func (s *Skopeo) Copy(t testing.TB, ref string) Pulled {
	t.Helper()
	return s.copy(t, ref)
}

// CopyAs is Copy with a user's credentials.
func (s *Skopeo) CopyAs(t testing.TB, ref string, c Creds) Pulled {
	t.Helper()
	return s.copy(t, ref, "--src-creds", c.User+":"+c.Password)
}

// CopyErr is Copy that returns skopeo's output and error instead of failing the test.
func (s *Skopeo) CopyErr(t testing.TB, ref string) (string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "skopeo")
	return RunErr(PullTimeout, nil, s.Bin, "--insecure-policy", "copy", "--all", "--src-tls-verify=false", "docker://"+ref, "dir:"+dir)
}

func (s *Skopeo) copy(t testing.TB, ref string, extra ...string) Pulled {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "skopeo")
	args := append([]string{"copy", "--all", "--src-tls-verify=false"}, extra...)
	s.run(t, append(args, "docker://"+ref, "dir:"+dir)...)
	m, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatalf("skopeo copy %s wrote no manifest: %v", ref, err)
	}
	p := Pulled{Digest: SHA256Digest(m), Dir: dir, Blobs: blobsIn(t, dir)}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		h, ok := strings.CutSuffix(e.Name(), ".manifest.json")
		if !ok || !hexName.MatchString(h) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256Hex(b); got != h {
			t.Fatalf("skopeo stored manifest %s with content of sha256 %s", e.Name(), got)
		}
		p.Manifests = append(p.Manifests, "sha256:"+h)
	}
	sort.Strings(p.Manifests)
	return p
}

// RawManifest returns the manifest bytes of ref as the registry serves them (`skopeo inspect --raw`).
func (s *Skopeo) RawManifest(t testing.TB, ref string) []byte {
	t.Helper()
	return []byte(s.run(t, "inspect", "--raw", "--tls-verify=false", "docker://"+ref))
}

// Podman runs podman as root with its own storage (vfs, so no mounts outlive the test) in a temp
// dir, isolated from any system podman.
type Podman struct {
	Bin  string
	root string
	run  string
	tmp  string
}

// NewPodman finds podman and gives it empty storage that is removed with the test.
func NewPodman(t testing.TB) *Podman {
	t.Helper()
	bin := Need(t, "podman", "apt-get install -y podman")
	d := t.TempDir()
	// podman refuses a runroot longer than 50 bytes, shorter than most t.TempDir paths.
	run, err := os.MkdirTemp("/tmp", "p")
	if err != nil {
		t.Fatal(err)
	}
	p := &Podman{Bin: bin, root: filepath.Join(d, "root"), run: run, tmp: filepath.Join(d, "tmp")}
	if err := os.MkdirAll(p.tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// vfs stores images as plain directories, so removing the directories is enough; only
		// the runroot lives outside the test's temp dir.
		if err := os.RemoveAll(run); err != nil {
			t.Errorf("remove podman runroot: %v", err)
		}
	})
	return p
}

func (p *Podman) env() []string {
	// TMPDIR: podman stages blobs there; keep them inside the test's own directory.
	return []string{"TMPDIR=" + p.tmp}
}

// global puts the storage and the host-independent settings before args. cgroupfs and the file
// event backend: there is no systemd or journald on these machines.
func (p *Podman) global(args ...string) []string {
	return append([]string{
		"--root", p.root, "--runroot", p.run, "--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs", "--events-backend", "file",
	}, args...)
}

// Cmd runs podman with args (after the storage flags) and returns its output.
func (p *Podman) Cmd(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, PullTimeout, p.env(), p.Bin, p.global(args...)...)
}

// Pull pulls ref over plain HTTP and returns the digest podman recorded for it (for an index:
// the index's digest; podman stores the linux/amd64 image).
func (p *Podman) Pull(t testing.TB, ref string) Pulled {
	t.Helper()
	p.Cmd(t, "pull", "--tls-verify=false", "--quiet", ref)
	return Pulled{Digest: p.ImageDigest(t, ref)}
}

// PullAs is Pull with a user's credentials.
func (p *Podman) PullAs(t testing.TB, ref string, c Creds) Pulled {
	t.Helper()
	p.Cmd(t, "pull", "--tls-verify=false", "--quiet", "--creds", c.User+":"+c.Password, ref)
	return Pulled{Digest: p.ImageDigest(t, ref)}
}

// ImageDigest returns the manifest digest of the stored image ref was pulled as.
func (p *Podman) ImageDigest(t testing.TB, ref string) string {
	t.Helper()
	out := strings.TrimSpace(p.Cmd(t, "image", "inspect", "--format", "{{.Digest}}", ref))
	if !strings.HasPrefix(out, "sha256:") {
		t.Fatalf("podman image inspect %s: no digest in %q", ref, out)
	}
	return out
}

// Crane runs the crane CLI.
type Crane struct {
	Bin string
	env []string // DOCKER_CONFIG of As
}

// As returns a crane that authenticates as c to registry (host:port), through a Docker config
// file of its own.
func (c *Crane) As(t testing.TB, registry string, cr Creds) *Crane {
	t.Helper()
	return &Crane{Bin: c.Bin, env: []string{"DOCKER_CONFIG=" + DockerConfigDir(t, registry, cr)}}
}

// NewCrane finds crane (see Need).
func NewCrane(t testing.TB) *Crane {
	t.Helper()
	return &Crane{Bin: Need(t, "crane", "go install github.com/google/go-containerregistry/cmd/crane@v0.22.1")}
}

// Cmd runs crane with args and --insecure (plain HTTP to any registry), returning its output.
func (c *Crane) Cmd(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, PullTimeout, c.env, c.Bin, append(args, "--insecure")...)
}

// Digest returns what `crane digest` reports for ref: the digest of the manifest or index.
func (c *Crane) Digest(t testing.TB, ref string) string {
	t.Helper()
	return strings.TrimSpace(c.Cmd(t, "digest", ref))
}

// Pull pulls ref (a whole index when ref names one) into an OCI layout and returns the digest
// recorded in its index.json and the verified blobs.
func (c *Crane) Pull(t testing.TB, ref string) Pulled {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "crane")
	c.Cmd(t, "pull", "--format", "oci", ref, dir)
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatalf("crane pull %s: %v", ref, err)
	}
	var idx struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("crane pull %s: index.json has not exactly one manifest (%v):\n%s", ref, err, b)
	}
	return Pulled{Digest: idx.Manifests[0].Digest, Dir: dir, Blobs: blobsIn(t, filepath.Join(dir, "blobs", "sha256"))}
}

// LibPull fetches ref with the go-containerregistry library over plain HTTP, reads and verifies
// every blob (of every platform of an index), and returns the top-level digest.
func LibPull(t testing.TB, ref string, auth authn.Authenticator) Pulled {
	t.Helper()
	if auth == nil {
		auth = authn.Anonymous
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("reference %q: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), PullTimeout)
	defer cancel()
	desc, err := remote.Get(r, remote.WithContext(ctx), remote.WithAuth(auth))
	if err != nil {
		t.Fatalf("get %s: %v", ref, err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Index(idx); err != nil {
			t.Fatalf("index %s: %v", ref, err)
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(img); err != nil {
			t.Fatalf("image %s: %v", ref, err)
		}
	}
	if got := SHA256Digest(desc.Manifest); got != desc.Digest.String() {
		t.Fatalf("get %s: manifest bytes hash to %s, registry said %s", ref, got, desc.Digest)
	}
	return Pulled{Digest: desc.Digest.String()}
}
