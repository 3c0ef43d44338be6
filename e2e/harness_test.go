package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// TestClientsDirect pulls straight from the registry, without the proxy: when it fails, the
// environment or a client is broken, not the proxy, and the proxy tests' failures mean nothing.
func TestClientsDirect(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	images := map[string]testenv.Image{
		"oci":    reg.PushOCIImage(t, "acme/images/app:1.0"),
		"index":  reg.PushOCIIndex(t, "acme/images/multi:1.0"),
		"docker": reg.PushDockerImage(t, "acme/images/legacy:1.0"),
	}
	for kind, im := range images {
		t.Run(kind, func(t *testing.T) {
			checkAllClients(t, im.Ref, im.Ref, im)
		})
	}
}

// checkAllClients pulls ref with every client and checks each got want's digest (and, where the
// client keeps files, every blob of want). The go-containerregistry clients (crane, the library)
// pull ggcrRef instead: since v0.21.6 they refuse to follow a redirect from one host to another
// whose address is a private or loopback IP literal ("SSRF protection"), while DNS names pass.
// So they need a proxy whose upstream is named by a host name (localhost), whereas docker,
// podman and skopeo also cover an upstream given as an IP literal (127.0.0.2).
func checkAllClients(t *testing.T, ref, ggcrRef string, want testenv.Image) {
	t.Helper()
	t.Run("crane", func(t *testing.T) {
		c := testenv.NewCrane(t)
		if got := c.Digest(t, ggcrRef); got != want.Digest {
			t.Errorf("crane digest %s = %s, want %s", ggcrRef, got, want.Digest)
		}
		p := c.Pull(t, ggcrRef)
		if p.Digest != want.Digest {
			t.Errorf("crane pull %s: digest %s, want %s", ggcrRef, p.Digest, want.Digest)
		}
		checkBlobs(t, p, want)
	})
	t.Run("skopeo", func(t *testing.T) {
		s := testenv.NewSkopeo(t)
		if got := testenv.SHA256Digest(s.RawManifest(t, ref)); got != want.Digest {
			t.Errorf("skopeo inspect --raw %s hashes to %s, want %s", ref, got, want.Digest)
		}
		p := s.Copy(t, ref)
		checkSkopeoCopy(t, ref, p, want)
		checkBlobs(t, p, want)
	})
	t.Run("library", func(t *testing.T) {
		if p := testenv.LibPull(t, ggcrRef, nil); p.Digest != want.Digest {
			t.Errorf("go-containerregistry %s: digest %s, want %s", ggcrRef, p.Digest, want.Digest)
		}
	})
	// Both daemons name a stored image by its config digest, which shows they stored the
	// linux/amd64 image of an index, with the config blob fetched through the redirects.
	wantID := want.Config
	if len(want.Manifests) > 0 {
		wantID = want.Child(t, "linux/amd64").Config
	}
	t.Run("podman", func(t *testing.T) {
		p := testenv.NewPodman(t)
		if got := p.Pull(t, ref).Digest; got != want.Digest {
			t.Errorf("podman pull %s: digest %s, want %s", ref, got, want.Digest)
		}
		if id := "sha256:" + strings.TrimSpace(p.Cmd(t, "image", "inspect", "--format", "{{.Id}}", ref)); id != wantID {
			t.Errorf("podman image id %s, want the config digest %s", id, wantID)
		}
	})
	t.Run("docker", func(t *testing.T) {
		d := testenv.StartDockerd(t)
		d.Rmi(t, ref)
		t.Cleanup(func() { d.Rmi(t, ref) })
		if got := d.Pull(t, ref).Digest; got != want.Digest {
			t.Errorf("docker pull %s: digest %s, want %s", ref, got, want.Digest)
		}
		if id := strings.TrimSpace(d.Cmd(t, time.Minute, "image", "inspect", "--format", "{{.Id}}", ref)); id != wantID {
			t.Errorf("docker image id %s, want the config digest %s", id, wantID)
		}
	})
}

// checkSkopeoCopy checks what skopeo copied from ref against want: the digest of an image, or
// every image of an index (skopeo rewrites an index, so its digest differs).
func checkSkopeoCopy(t *testing.T, ref string, p testenv.Pulled, want testenv.Image) {
	t.Helper()
	if len(want.Manifests) == 0 && p.Digest != want.Digest {
		t.Errorf("skopeo copy %s: digest %s, want %s", ref, p.Digest, want.Digest)
	}
	for _, c := range want.Manifests {
		if !slices.Contains(p.Manifests, c.Digest) {
			t.Errorf("skopeo copy %s: image %s (%s) missing, got %v", ref, c.Digest, c.Platform, p.Manifests)
		}
	}
}

// checkBlobs checks that a client that keeps files got every blob of want (verified by content).
func checkBlobs(t *testing.T, p testenv.Pulled, want testenv.Image) {
	t.Helper()
	for _, b := range want.Blobs() {
		if !slices.Contains(p.Blobs, b) {
			t.Errorf("blob %s missing from %s (has %v)", b, p.Dir, p.Blobs)
		}
	}
}

// TestRegistryOptions checks the registry options later features rely on: htpasswd auth and push
// notifications.
func TestRegistryOptions(t *testing.T) {
	t.Run("htpasswd", func(t *testing.T) {
		reg := testenv.StartRegistry(t, testenv.RegistryOptions{Users: map[string]string{"bot": "s3cret"}})
		im := reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")
		if got := testenv.LibPull(t, im.Ref, reg.Auth).Digest; got != im.Digest {
			t.Errorf("authenticated pull: digest %s, want %s", got, im.Digest)
		}
		a := do(t, "GET", reg.URL+"/v2/"+upstreamPrefix+"/app/manifests/1.0", nil)
		if a.Status != http.StatusUnauthorized {
			t.Errorf("anonymous GET manifest: status %d, want 401", a.Status)
		}
	})

	t.Run("notifications", func(t *testing.T) {
		events := make(chan string, 100)
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var env struct {
				Events []struct {
					Action string `json:"action"`
					Target struct {
						Repository string `json:"repository"`
						Tag        string `json:"tag"`
						Digest     string `json:"digest"`
					} `json:"target"`
				} `json:"events"`
			}
			if r.Header.Get("Authorization") != "Bearer tok" {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			if err := json.NewDecoder(r.Body).Decode(&env); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			for _, e := range env.Events {
				select {
				case events <- e.Action + " " + e.Target.Repository + ":" + e.Target.Tag + "@" + e.Target.Digest:
				default: // the test has what it needs or gave up; never block the registry
				}
			}
		}))
		defer hook.Close()
		reg := testenv.StartRegistry(t, testenv.RegistryOptions{Notify: []testenv.NotifyEndpoint{{
			URL:           hook.URL + "/webhooks/registry",
			Headers:       map[string][]string{"Authorization": {"Bearer tok"}},
			IgnoreActions: []string{"pull"},
		}}})
		im := reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")
		want := "push " + upstreamPrefix + "/app:1.0@" + im.Digest
		timeout := time.After(30 * time.Second)
		var seen []string
		for {
			select {
			case e := <-events:
				if e == want {
					return
				}
				seen = append(seen, e)
			case <-timeout:
				t.Fatalf("no %q event within 30s; got %v", want, seen)
			}
		}
	})
}
