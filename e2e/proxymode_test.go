package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// Distinctive secrets: a test searches every log line, metric and answer for them.
const (
	alicePassword = "alice-Pa55w0rd-7d1f9c"
	botPassword   = "bot-S3cr3t-Pa55-42a8e1"
)

// tokenSetup is a GHCR-shaped upstream (a distribution registry behind a token server; anyone
// may pull acme/public/, named users everything) and a proxy in front of it with one route per
// way of authenticating:
//
//	pub/   proxy mode, anonymous tokens          -> acme/public/
//	own/   proxy mode, the proxy's credentials   -> acme/private/
//	mine/  proxy mode, the clients' credentials  -> acme/private/
//	cfg/   proxy mode, the proxy's credentials from a Docker config file -> acme/private/
type tokenSetup struct {
	ts    *testenv.TokenServer
	reg   *testenv.Registry
	proxy *testenv.Proxy
	alice testenv.Creds

	pubApp, pubMulti   testenv.Image
	privApp, privMulti testenv.Image
}

func startTokenSetup(t *testing.T, extraConfig string) *tokenSetup {
	t.Helper()
	bin := needProxy(t)
	s := &tokenSetup{alice: testenv.Creds{User: "alice", Password: alicePassword}}
	s.ts = testenv.StartTokenServer(t, testenv.TokenServerOptions{
		Users:  map[string]string{"alice": alicePassword, "bot": botPassword},
		Public: []string{"acme/public/"},
	})
	s.reg = testenv.StartTokenRegistry(t, s.ts, testenv.RegistryOptions{Host: "127.0.0.2"})
	app := testenv.OCIImage(t, 2, 4096, "linux/amd64")
	multi := testenv.OCIIndex(t, 2, 4096, "linux/amd64", "linux/arm64")
	s.pubApp = s.reg.Push(t, "acme/public/app:1.0", app)
	s.pubMulti = s.reg.PushIndex(t, "acme/public/multi:1.0", multi)
	s.privApp = s.reg.Push(t, "acme/private/app:1.0", testenv.OCIImage(t, 2, 4096, "linux/amd64"))
	s.privMulti = s.reg.PushIndex(t, "acme/private/multi:1.0", testenv.OCIIndex(t, 2, 4096, "linux/amd64", "linux/arm64"))

	pw := filepath.Join(t.TempDir(), "bot-password")
	if err := os.WriteFile(pw, []byte(botPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dockerCfg := filepath.Join(testenv.DockerConfigDir(t, s.reg.Host, testenv.Creds{User: "bot", Password: botPassword}), "config.json")
	cfg := fmt.Sprintf(`upstream: %[1]s/v2/acme/public/
routes:
  - prefix: pub/
    upstream: %[1]s/v2/acme/public/
    mode: proxy
  - prefix: own/
    upstream: %[1]s/v2/acme/private/
    mode: proxy
    auth: {username: bot, password_file: %[2]s}
  - prefix: mine/
    upstream: %[1]s/v2/acme/private/
    mode: proxy
    auth: {client: true}
  - prefix: cfg/
    upstream: %[1]s/v2/acme/private/
    mode: proxy
    auth: {docker_config: %[4]s}
%[3]s`, s.reg.URL, pw, extraConfig, dockerCfg)
	s.proxy = testenv.StartProxy(t, bin, cfg)
	return s
}

// named is the proxy's address by host name, for go-containerregistry clients: crane refuses a
// token realm on a loopback IP literal, and the realm is built from the address the client used.
func (s *tokenSetup) named(ref string) string {
	_, port, _ := net.SplitHostPort(s.proxy.Addr)
	return "localhost:" + port + "/" + ref
}

// Through a plain redirect, a token-guarded upstream defeats skopeo, as GHCR does in production:
// it does not take a token for a registry it was redirected to.
func TestRedirectModeFailsForTokenUpstream(t *testing.T) {
	bin := needProxy(t)
	ts := testenv.StartTokenServer(t, testenv.TokenServerOptions{Public: []string{"acme/public/"}})
	reg := testenv.StartTokenRegistry(t, ts, testenv.RegistryOptions{Host: "127.0.0.2"})
	reg.Push(t, "acme/public/app:1.0", testenv.OCIImage(t, 1, 1024, "linux/amd64"))
	p := testenv.StartProxy(t, bin, fmt.Sprintf("upstream: %s/v2/acme/public/\n", reg.URL))
	out, err := testenv.NewSkopeo(t).CopyErr(t, p.Ref("app:1.0"))
	if err == nil {
		t.Fatalf("skopeo copy through a redirect to a token registry succeeded; the proxy-mode tests prove nothing:\n%s", out)
	}
	t.Logf("skopeo through a redirect, as expected: %s", strings.TrimSpace(out[max(0, len(out)-300):]))
}

func TestProxyModePulls(t *testing.T) {
	s := startTokenSetup(t, "")
	d := testenv.StartDockerd(t)
	for _, tc := range []struct {
		name  string
		ref   string
		want  testenv.Image
		creds *testenv.Creds
	}{
		{"anonymous image", "pub/app:1.0", s.pubApp, nil},
		{"anonymous index", "pub/multi:1.0", s.pubMulti, nil},
		{"proxy credentials image", "own/app:1.0", s.privApp, nil},
		{"proxy credentials index", "own/multi:1.0", s.privMulti, nil},
		{"client credentials image", "mine/app:1.0", s.privApp, &s.alice},
		{"client credentials index", "mine/multi:1.0", s.privMulti, &s.alice},
		{"by digest", "own/app@" + s.privApp.Digest, s.privApp, nil},
		{"docker config credentials", "cfg/multi:1.0", s.privMulti, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := s.proxy.Ref(tc.ref)
			t.Run("skopeo", func(t *testing.T) {
				sk := testenv.NewSkopeo(t)
				var p testenv.Pulled
				if tc.creds != nil {
					p = sk.CopyAs(t, ref, *tc.creds)
				} else {
					p = sk.Copy(t, ref)
				}
				checkSkopeoCopy(t, ref, p, tc.want)
				checkBlobs(t, p, tc.want)
			})
			t.Run("crane", func(t *testing.T) {
				c := testenv.NewCrane(t)
				named := s.named(tc.ref)
				if tc.creds != nil {
					c = c.As(t, strings.SplitN(named, "/", 2)[0], *tc.creds)
				}
				p := c.Pull(t, named)
				if p.Digest != tc.want.Digest {
					t.Errorf("crane pull %s: digest %s, want %s", named, p.Digest, tc.want.Digest)
				}
				checkBlobs(t, p, tc.want)
			})
			t.Run("library", func(t *testing.T) {
				var a authn.Authenticator = authn.Anonymous
				if tc.creds != nil {
					a = &authn.Basic{Username: tc.creds.User, Password: tc.creds.Password}
				}
				if p := testenv.LibPull(t, s.named(tc.ref), a); p.Digest != tc.want.Digest {
					t.Errorf("library pull: digest %s, want %s", p.Digest, tc.want.Digest)
				}
			})
			t.Run("podman", func(t *testing.T) {
				pm := testenv.NewPodman(t)
				var p testenv.Pulled
				if tc.creds != nil {
					p = pm.PullAs(t, ref, *tc.creds)
				} else {
					p = pm.Pull(t, ref)
				}
				if p.Digest != tc.want.Digest {
					t.Errorf("podman pull %s: digest %s, want %s", ref, p.Digest, tc.want.Digest)
				}
			})
			t.Run("ctr", func(t *testing.T) {
				if p := d.CtrPull(t, ref, tc.creds); p.Digest != tc.want.Digest {
					t.Errorf("ctr pull %s: digest %s, want %s", ref, p.Digest, tc.want.Digest)
				}
			})
			t.Run("docker", func(t *testing.T) {
				if tc.creds != nil {
					d.Login(t, s.proxy.Addr, *tc.creds)
				}
				d.Rmi(t, ref)
				t.Cleanup(func() { d.Rmi(t, ref) })
				if got := d.Pull(t, ref).Digest; got != tc.want.Digest {
					t.Errorf("docker pull %s: digest %s, want %s", ref, got, tc.want.Digest)
				}
			})
		})
	}
	checkNoSecrets(t, s)
}

// checkNoSecrets searches the proxy's log and metrics for the passwords and for tokens.
func checkNoSecrets(t *testing.T, s *tokenSetup) {
	t.Helper()
	metrics := do(t, "GET", s.proxy.URL+"/metrics", nil)
	for where, text := range map[string]string{"log": s.proxy.Logs(), "metrics": string(metrics.Body)} {
		for _, secret := range []string{alicePassword, botPassword, "Bearer ey", "Basic YWxp", "Basic Ym90"} {
			if strings.Contains(text, secret) {
				t.Errorf("the proxy's %s contains %q", where, secret)
			}
		}
	}
}

// Sync copies from a token-guarded upstream with the same upstream clients as proxy mode: the
// proxy's credentials for a private repository, anonymous tokens for a public one.
func TestSyncFromTokenUpstream(t *testing.T) {
	testenv.IsolateGCS(t)
	gcs := testenv.StartFakeGCS(t)
	gcs.CreateBucket(t, "token-mirror")
	t.Setenv("STORAGE_EMULATOR_HOST", gcs.Host)
	s := startTokenSetup(t, `mirrors:
  - {name: g, provider: gcs, bucket: token-mirror, prefix: blobs/}
sync:
  repositories:
    - name: own/app
    - name: pub/multi
`)
	rep, out, err := runSync(t, s.proxy.Config)
	if err != nil || rep.Failures() != 0 {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	for _, b := range append(s.privApp.Blobs(), s.pubMulti.Blobs()...) {
		key := "blobs/" + strings.Replace(b, ":", "/", 1)
		a := do(t, http.MethodGet, gcs.URL+"/token-mirror/"+key, nil)
		if a.Status != http.StatusOK || testenv.SHA256Digest(a.Body) != b {
			t.Errorf("blob %s in the mirror: status %d, content %s", b, a.Status, testenv.SHA256Digest(a.Body))
		}
	}
	if strings.Contains(out, botPassword) {
		t.Error("the sync output contains the proxy's password")
	}
}
