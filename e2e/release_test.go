package e2e

import (
	"archive/tar"
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// TestRelease runs scripts/release.sh as a maintainer would, on throwaway git repositories that
// hold this tree, against a local distribution registry: a release and its short tags, both
// platforms, the labels and the non-root user, the binaries' versions, a second build of the same
// commit elsewhere (the same digest), a pre-release (no short tag moves), a patch to an older
// line (only its own X.Y moves), and the refusals of a dirty tree and of an untagged commit.
func TestRelease(t *testing.T) {
	git := testenv.Need(t, "git", "apt-get install -y git")
	crane := testenv.NewCrane(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	a := snapshot(t, git, filepath.Join(t.TempDir(), "a"))
	c1 := gitOut(t, git, a, "rev-parse", "HEAD")

	t.Run("refusals", func(t *testing.T) {
		out, err := releaseErr(a, reg.Host+"/refused", nil)
		if err == nil || !strings.Contains(out, "no tag vX.Y.Z") {
			t.Errorf("release.sh on an untagged commit: %v, want a refusal naming the tag forms:\n%s", err, out)
		}
		gitOut(t, git, a, "tag", "v1.2.3")
		stray := filepath.Join(a, "cmd", "oci-proxy", "stray.go")
		if err := os.WriteFile(stray, []byte("package main\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err = releaseErr(a, reg.Host+"/refused", nil)
		if err == nil || !strings.Contains(out, "work tree has changes") {
			t.Errorf("release.sh with an untracked file: %v, want a refusal:\n%s", err, out)
		}
		if err := os.Remove(stray); err != nil {
			t.Fatal(err)
		}
		if tags := listTags(t, crane, reg.Host+"/refused"); len(tags) > 0 {
			t.Errorf("refused releases pushed tags %v", tags)
		}
	})
	if t.Failed() {
		return
	}

	image := reg.Host + "/oci-proxy"
	first, took := release(t, a, image, nil)
	t.Logf("release v1.2.3 (linux/amd64 and linux/arm64): %s in %s", first, took.Round(time.Second))
	d1 := digestOf(t, first)

	t.Run("tags", func(t *testing.T) {
		want := []string{"1", "1.2", "1.2.3", "latest"}
		if got := listTags(t, crane, image); !slices.Equal(got, want) {
			t.Errorf("tags after v1.2.3: %v, want %v", got, want)
		}
		for _, tag := range want {
			if got := crane.Digest(t, image+":"+tag); got != d1 {
				t.Errorf("%s:%s is %s, want the index %s", image, tag, got, d1)
			}
		}
	})

	t.Run("index", func(t *testing.T) {
		checkIndex(t, crane, image+"@"+d1, "1.2.3", c1)
	})

	t.Run("docker-run", func(t *testing.T) {
		d := testenv.StartDockerd(t)
		ref := image + ":1.2.3"
		d.Rmi(t, ref)
		t.Cleanup(func() { d.Rmi(t, ref) })
		d.Pull(t, ref)
		out := d.Run(t, "--network", "none", ref, "version")
		if want := "oci-proxy 1.2.3 (commit " + c1 + ", built 2026-01-02T03:04:05Z"; !strings.Contains(out, want) {
			t.Errorf("docker run %s version: %q, want it to contain %q", ref, out, want)
		}
		user := strings.TrimSpace(d.Cmd(t, time.Minute, "image", "inspect", "--format", "{{.Config.User}}", ref))
		if user != "65534:65534" {
			t.Errorf("docker image inspect %s: user %q, want 65534:65534", ref, user)
		}
	})

	t.Run("go-build", func(t *testing.T) {
		// Without -ldflags, the version comes from what the go command records: the tag at a
		// clean HEAD, the revision and the commit time.
		bin := filepath.Join(t.TempDir(), "oci-proxy")
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/oci-proxy")
		cmd.Dir = a
		cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=true", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build in the tagged clone: %v\n%s", err, out)
		}
		out := testenv.Run(t, time.Minute, nil, bin, "version")
		if want := "oci-proxy 1.2.3 (commit " + c1 + ", built 2026-01-02T03:04:05Z"; !strings.Contains(out, want) {
			t.Errorf("go build's binary says %q, want it to contain %q", out, want)
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		b := filepath.Join(t.TempDir(), "elsewhere", "b")
		testenv.Run(t, time.Minute, gitEnv(), git, "clone", "--quiet", a, b)
		again, took := release(t, b, reg.Host+"/oci-proxy-again", nil)
		t.Logf("second build of v1.2.3 in another clone: %s in %s", again, took.Round(time.Second))
		if got := digestOf(t, again); got != d1 {
			t.Errorf("two builds of commit %s: digests %s and %s, want one", c1, d1, got)
		}
	})

	t.Run("pre-release", func(t *testing.T) {
		commitAt(t, git, a, "2026-02-03T04:05:06Z", "next")
		gitOut(t, git, a, "tag", "v1.3.0-rc.1")
		ref, took := release(t, a, image, nil)
		t.Logf("release v1.3.0-rc.1: %s in %s", ref, took.Round(time.Second))
		rc := digestOf(t, ref)
		if rc == d1 {
			t.Fatalf("the pre-release of another commit has the digest of v1.2.3")
		}
		want := []string{"1", "1.2", "1.2.3", "1.3.0-rc.1", "latest"}
		if got := listTags(t, crane, image); !slices.Equal(got, want) {
			t.Errorf("tags after v1.3.0-rc.1: %v, want %v", got, want)
		}
		for _, tag := range []string{"1", "1.2", "latest"} {
			if got := crane.Digest(t, image+":"+tag); got != d1 {
				t.Errorf("the pre-release moved %s to %s; want it left on %s", tag, got, d1)
			}
		}
		if got := crane.Digest(t, image+":1.3.0-rc.1"); got != rc {
			t.Errorf("%s:1.3.0-rc.1 is %s, want %s", image, got, rc)
		}
		checkIndex(t, crane, image+"@"+rc, "1.3.0-rc.1", gitOut(t, git, a, "rev-parse", "HEAD"))
	})

	t.Run("older-line", func(t *testing.T) {
		gitOut(t, git, a, "checkout", "--quiet", "-b", "release-1.1", c1)
		commitAt(t, git, a, "2026-03-04T05:06:07Z", "a fix for 1.1")
		gitOut(t, git, a, "tag", "v1.1.9")
		ref, took := release(t, a, image, []string{"PLATFORMS=linux/amd64"})
		t.Logf("release v1.1.9 (linux/amd64 only): %s in %s", ref, took.Round(time.Second))
		old := digestOf(t, ref)
		want := []string{"1", "1.1", "1.1.9", "1.2", "1.2.3", "1.3.0-rc.1", "latest"}
		if got := listTags(t, crane, image); !slices.Equal(got, want) {
			t.Errorf("tags after v1.1.9: %v, want %v", got, want)
		}
		for tag, dg := range map[string]string{"1.1": old, "1.1.9": old, "1": d1, "1.2": d1, "latest": d1} {
			if got := crane.Digest(t, image+":"+tag); got != dg {
				t.Errorf("after v1.1.9, %s is %s, want %s", tag, got, dg)
			}
		}
	})
}

// checkIndex checks a pushed release: an OCI index of linux/amd64 and linux/arm64 images whose
// configurations carry the labels and a non-root user, and whose binaries were built for their
// platform, without cgo, with the version stamped in.
func checkIndex(t *testing.T, crane *testenv.Crane, ref, version, commit string) {
	t.Helper()
	var idx struct {
		MediaType string `json:"mediaType"`
		Manifests []struct {
			Digest   string `json:"digest"`
			Platform struct {
				OS           string `json:"os"`
				Architecture string `json:"architecture"`
			} `json:"platform"`
		} `json:"manifests"`
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal([]byte(crane.Cmd(t, "manifest", ref)), &idx); err != nil {
		t.Fatalf("manifest of %s: %v", ref, err)
	}
	if idx.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("%s has media type %q, want an OCI index", ref, idx.MediaType)
	}
	if got := idx.Annotations["org.opencontainers.image.version"]; got != version {
		t.Errorf("index annotation version %q, want %q", got, version)
	}
	repo, _, _ := strings.Cut(ref, "@")
	var platforms []string
	for _, m := range idx.Manifests {
		plat := m.Platform.OS + "/" + m.Platform.Architecture
		platforms = append(platforms, plat)
		child := repo + "@" + m.Digest
		var cfg struct {
			OS           string `json:"os"`
			Architecture string `json:"architecture"`
			Created      string `json:"created"`
			Config       struct {
				User       string            `json:"User"`
				Entrypoint []string          `json:"Entrypoint"`
				Labels     map[string]string `json:"Labels"`
			} `json:"config"`
		}
		if err := json.Unmarshal([]byte(crane.Cmd(t, "config", child)), &cfg); err != nil {
			t.Fatalf("config of %s: %v", child, err)
		}
		if cfg.OS+"/"+cfg.Architecture != plat {
			t.Errorf("%s: config for %s/%s under the index's %s", plat, cfg.OS, cfg.Architecture, plat)
		}
		uid, _, _ := strings.Cut(cfg.Config.User, ":")
		if uid == "" || uid == "0" || uid == "root" {
			t.Errorf("%s: user %q, want a non-root one", plat, cfg.Config.User)
		}
		labels := cfg.Config.Labels
		for k, want := range map[string]string{"version": version, "revision": commit, "created": cfg.Created} {
			if got := labels["org.opencontainers.image."+k]; got != want {
				t.Errorf("%s: label %s = %q, want %q", plat, k, got, want)
			}
		}
		for _, k := range []string{"source", "licenses", "created"} {
			if labels["org.opencontainers.image."+k] == "" {
				t.Errorf("%s: no label org.opencontainers.image.%s", plat, k)
			}
		}
		checkBinary(t, crane, child, m.Platform.Architecture, version, commit)
	}
	slices.Sort(platforms)
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Errorf("%s holds %v, want %v", ref, platforms, want)
	}
}

// checkBinary reads /oci-proxy out of the image's filesystem and checks its build information;
// the host's own platform's binary is also run.
func checkBinary(t *testing.T, crane *testenv.Crane, ref, arch, version, commit string) {
	t.Helper()
	fsTar := filepath.Join(t.TempDir(), "fs.tar")
	crane.Cmd(t, "export", ref, fsTar)
	f, err := os.Open(fsTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var bin, certs []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("crane export %s: %v", ref, err)
		}
		switch strings.TrimPrefix(h.Name, "/") {
		case "oci-proxy":
			bin, _ = io.ReadAll(tr)
		case "etc/ssl/certs/ca-certificates.crt":
			certs, _ = io.ReadAll(tr)
		}
	}
	if !bytes.Contains(certs, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("%s: no CA certificates at /etc/ssl/certs/ca-certificates.crt", ref)
	}
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("%s: /oci-proxy: %v", ref, err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["GOARCH"] != arch || settings["CGO_ENABLED"] != "0" {
		t.Errorf("%s: binary built with GOARCH=%s CGO_ENABLED=%s, want %s and 0", ref, settings["GOARCH"], settings["CGO_ENABLED"], arch)
	}
	// -trimpath keeps -ldflags out of the build information; what the go command stamps from
	// the tag and the revision must agree with them. The host's binary shows the -ldflags values.
	if bi.Main.Version != "v"+version || settings["vcs.revision"] != commit || settings["vcs.modified"] != "false" {
		t.Errorf("%s: binary built from %s %s (modified: %s), want v%s %s, unmodified",
			ref, bi.Main.Version, settings["vcs.revision"], settings["vcs.modified"], version, commit)
	}
	if arch != runtime.GOARCH {
		return
	}
	path := filepath.Join(t.TempDir(), "oci-proxy")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, want := testenv.Run(t, time.Minute, nil, path, "version"), "oci-proxy "+version+" (commit "+commit; !strings.HasPrefix(out, want) {
		t.Errorf("%s: /oci-proxy version says %q, want %q...", ref, out, want)
	}
}

// release runs scripts/release.sh in dir, pushing to image, and returns the reference it printed
// (image@digest) and how long it took.
func release(t *testing.T, dir, image string, env []string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	out, err := releaseErr(dir, image, env)
	if err != nil {
		t.Fatalf("scripts/release.sh: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	ref := lines[len(lines)-1]
	if !strings.HasPrefix(ref, image+"@sha256:") {
		t.Fatalf("scripts/release.sh ended with %q, want %s@sha256:...\n%s", ref, image, out)
	}
	return ref, time.Since(start)
}

func releaseErr(dir, image string, env []string) (string, error) {
	env = append([]string{"IMAGE=" + image, "INSECURE=1"}, env...)
	return testenv.RunErr(8*time.Minute, env, filepath.Join(dir, "scripts", "release.sh"))
}

func digestOf(t *testing.T, ref string) string {
	t.Helper()
	_, d, ok := strings.Cut(ref, "@")
	if !ok {
		t.Fatalf("%q has no digest", ref)
	}
	return d
}

func listTags(t *testing.T, crane *testenv.Crane, repo string) []string {
	t.Helper()
	out, err := testenv.RunErr(time.Minute, nil, crane.Bin, "ls", repo, "--insecure")
	if err != nil {
		if strings.Contains(out, "NAME_UNKNOWN") {
			return nil
		}
		t.Fatalf("crane ls %s: %v\n%s", repo, err, out)
	}
	tags := strings.Fields(out)
	slices.Sort(tags)
	return tags
}

// snapshot makes dir a git repository holding this tree as it is (tracked files and new ones
// not ignored), committed once at a fixed time, so that the release is of the code under test.
func snapshot(t *testing.T, git, dir string) string {
	t.Helper()
	root := repoRoot(t)
	files := testenv.Run(t, time.Minute, nil, git, "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	for _, f := range strings.Split(strings.TrimRight(files, "\x00"), "\x00") {
		src, dst := filepath.Join(root, f), filepath.Join(dir, f)
		fi, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree
		} else if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, dst); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	gitOut(t, git, dir, "init", "--quiet", "--initial-branch=main")
	gitOut(t, git, dir, "add", "--all")
	commitAt(t, git, dir, "2026-01-02T03:04:05Z", "snapshot")
	return dir
}

// commitAt commits what is staged (or nothing) with author and committer time at.
func commitAt(t *testing.T, git, dir, at, msg string) {
	t.Helper()
	testenv.Run(t, time.Minute, append(gitEnv(), "GIT_AUTHOR_DATE="+at, "GIT_COMMITTER_DATE="+at),
		git, "-C", dir, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", msg)
}

func gitOut(t *testing.T, git, dir string, args ...string) string {
	t.Helper()
	return strings.TrimSpace(testenv.Run(t, time.Minute, gitEnv(), git, append([]string{"-C", dir}, args...)...))
}

// gitEnv keeps the machine's git configuration (signing, hooks, identity) out of the test.
func gitEnv() []string {
	return []string{
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_AUTHOR_NAME=release test", "GIT_AUTHOR_EMAIL=release@test.invalid",
		"GIT_COMMITTER_NAME=release test", "GIT_COMMITTER_EMAIL=release@test.invalid",
	}
}
