package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// The object-storage tests put three real mirrors behind the proxy: versitygw as an S3 mirror in
// the US (it verifies SigV4 presigned URLs), fake-gcs-server as a GCS mirror in Germany, and a
// plain web server as an `http` mirror in Singapore. Clients reach the proxy through fronts,
// reverse proxies that each claim one GeoIP test address in X-Forwarded-For, so that a pull
// through a front is a pull from that continent, and each mirror serves some of them.

const (
	mirrorBucket = "oci-mirror"
	mirrorPrefix = "blobs/"
	// webHost is the `http` mirror's own loopback "host" (the registry is on 127.0.0.2, S3 on
	// testenv.S3Host, GCS on testenv.GCSHost).
	webHost = "127.0.0.5"
)

// Mirror names as configured; X-Mirror carries them.
const (
	s3Mirror  = "s3-us"
	gcsMirror = "gcs-de"
	webMirror = "web-sg"
)

// place is where pulls through one front seem to come from, and the mirror that should serve
// them: the one in the client's country.
type place struct {
	name   string
	front  string // the front's loopback address
	client string // a GeoIP test address (testdata/geoip/README.md)
	mirror string
}

var (
	fromUS = place{name: "US", front: "127.0.0.11", client: "216.160.83.56", mirror: s3Mirror}
	fromDE = place{name: "DE", front: "127.0.0.12", client: "89.160.20.112", mirror: gcsMirror}
	fromSG = place{name: "SG", front: "127.0.0.13", client: "175.16.199.1", mirror: webMirror}
	places = []place{fromUS, fromDE, fromSG}
)

// storage is the registry, the three mirrors holding copies of its blobs, and what the proxy's
// configuration needs to reach them.
type storage struct {
	reg     *testenv.Registry
	s3      *testenv.S3Server
	s3Log   string // versitygw's access log (S3 server access log format)
	s3Creds string // AWS shared credentials file with versitygw's root key
	gcs     *testenv.GCSServer
	gcsKey  *rsa.PrivateKey
	gcsSA   string // service-account JSON key file holding gcsKey
	web     *testenv.MirrorServer
	geoip   string
}

// startStorage starts the registry and the three mirrors, each with an empty bucket, and keeps
// the machine's cloud settings away from the proxies started later (they inherit the test's
// environment).
func startStorage(t *testing.T) *storage {
	t.Helper()
	return startStorageWith(t, testenv.RegistryOptions{})
}

// startStorageWith is startStorage with the registry's options (notifications, say).
func startStorageWith(t *testing.T, regOpts testenv.RegistryOptions) *storage {
	t.Helper()
	isolateClouds(t)
	geoip, err := filepath.Abs(filepath.Join("..", "testdata", "geoip", "city.mmdb"))
	if err != nil {
		t.Fatal(err)
	}
	s := &storage{geoip: geoip, s3Log: filepath.Join(t.TempDir(), "s3-access.log")}
	// versitygw writes an access log when VGW_ACCESS_LOG names a file; StartVersityGW passes the
	// test's environment on.
	t.Setenv("VGW_ACCESS_LOG", s.s3Log)
	s.s3 = testenv.StartVersityGW(t, t.TempDir())
	s.s3.CreateBucket(t, mirrorBucket)
	s.s3Creds = s.s3.CredentialsFile(t, "default")
	s.gcs = startFakeGCS(t)
	s.gcs.CreateBucket(t, mirrorBucket)
	s.gcsSA, s.gcsKey = testenv.ServiceAccountKey(t)
	s.web = testenv.StartMirrorServer(t, webHost)
	s.reg = testenv.StartRegistry(t, regOpts)
	return s
}

// isolateClouds hides the machine's AWS and Google settings, and any HTTP proxy, from the proxy,
// which is started with the test's environment: it must use exactly the credentials files its
// configuration names, and reach the mirrors directly.
func isolateClouds(t *testing.T) {
	t.Helper()
	testenv.IsolateAWS(t)
	testenv.IsolateGCS(t)
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		t.Setenv(k, "")
	}
}

// startFakeGCS is testenv.StartFakeGCS with request logging on: the log is how the tests see
// which blobs the emulator served.
func startFakeGCS(t *testing.T) *testenv.GCSServer {
	t.Helper()
	bin := testenv.Need(t, "fake-gcs-server", testenv.FakeGCSInstall)
	port := strconv.Itoa(testenv.FreePort(t, testenv.GCSHost))
	host := net.JoinHostPort(testenv.GCSHost, port)
	g := &testenv.GCSServer{Host: host, URL: "http://" + host}
	g.Proc = testenv.Start(t, "fake-gcs-server", nil, bin,
		"-scheme", "http", "-host", testenv.GCSHost, "-port", port,
		"-backend", "memory", "-public-host", host, "-log-level", "info")
	testenv.WaitHTTP(t, g.Proc, g.URL+"/storage/v1/b")
	return g
}

// blobKey is a blob's object key in every mirror: prefix + "sha256/" + hex (docs/CONFIG.md).
func blobKey(digest string) string {
	return mirrorPrefix + "sha256/" + strings.TrimPrefix(digest, "sha256:")
}

// put stores a blob in all three mirrors.
func (s *storage) put(t *testing.T, digest string, data []byte) {
	t.Helper()
	if got := testenv.SHA256Digest(data); got != digest {
		t.Fatalf("blob %s has content with digest %s", digest, got)
	}
	key := blobKey(digest)
	s.s3.PutObject(t, mirrorBucket, key, data)
	s.gcs.Upload(t, mirrorBucket, key, data)
	s.web.Put("/"+key, data)
}

// mirrorImage copies every blob of im (of every platform of an index) from the registry into all
// three mirrors, as `oci-proxy sync` would.
func (s *storage) mirrorImage(t *testing.T, im testenv.Image) {
	t.Helper()
	repo, err := name.ParseReference(im.Ref, name.Insecure)
	if err != nil {
		t.Fatalf("reference %q: %v", im.Ref, err)
	}
	for _, d := range im.Blobs() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		l, err := remote.Layer(repo.Context().Digest(d), remote.WithContext(ctx))
		if err != nil {
			cancel()
			t.Fatalf("blob %s: %v", d, err)
		}
		rc, err := l.Compressed()
		if err != nil {
			cancel()
			t.Fatalf("fetch blob %s: %v", d, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		cancel()
		if err != nil {
			t.Fatalf("read blob %s: %v", d, err)
		}
		s.put(t, d, data)
	}
}

// randomBlob stores a blob that no one has asked for yet in all three mirrors (not in the
// registry: it is only ever redirected, never pulled), for checks that must not hit a cache.
func (s *storage) randomBlob(t *testing.T) string {
	t.Helper()
	b := make([]byte, 1024)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	d := testenv.SHA256Digest(b)
	s.put(t, d, b)
	return d
}

// endpoints are the addresses a proxy's configuration gives for the upstream and the mirrors.
type endpoints struct {
	upstream string // base URL with /v2/ and the repository prefix
	s3       string // S3 endpoint
	gcs      string // STORAGE_EMULATOR_HOST
	web      string // base_url of the http mirror
}

// direct are the servers' own loopback addresses.
func (s *storage) direct() endpoints {
	return endpoints{
		upstream: s.reg.URL + "/v2/" + upstreamPrefix + "/",
		s3:       s.s3.Endpoint,
		gcs:      s.gcs.Host,
		web:      s.web.URL + "/" + mirrorPrefix,
	}
}

// named are the same servers by host name (localhost, through forwarders on 127.0.0.1). The
// go-containerregistry clients refuse a redirect to another host's private IP literal (see
// checkAllClients), so crane needs a proxy whose redirects all name hosts. The S3 forwarder passes
// bytes unchanged, Host header included, so the SigV4 signature covers the name crane uses; the
// GCS one rewrites Host, because fake-gcs-server serves XML paths only for its public host.
func (s *storage) named(t *testing.T) endpoints {
	t.Helper()
	return endpoints{
		upstream: "http://" + testenv.Forward(t, s.reg.Host) + "/v2/" + upstreamPrefix + "/",
		s3:       "http://" + testenv.Forward(t, s.s3.Host),
		gcs:      testenv.ForwardHTTP(t, s.gcs.URL),
		web:      "http://" + testenv.Forward(t, strings.TrimPrefix(s.web.URL, "http://")) + "/" + mirrorPrefix,
	}
}

// configOptions are what the tests vary in a configuration over the three mirrors. The zero value
// is a proxy with the default signing TTL and presence settings, and no sync section.
type configOptions struct {
	s3SigningTTL time.Duration // 0: the default
	presence     string        // the presence section's body (YAML, indented by two); "": none
	sync         string        // the sync section's body (YAML, indented by two); "": none
}

// storageConfig is the YAML configuration of the upstream and the three mirrors at ep, trusting
// exactly the fronts of the places in trusted. The sync section, if any, comes last, so that a
// test may append to it.
func (s *storage) storageConfig(ep endpoints, trusted []place, o configOptions) string {
	var fronts []string
	for _, p := range trusted {
		fronts = append(fronts, strconv.Quote(p.front+"/32"))
	}
	s3TTL := ""
	if o.s3SigningTTL > 0 {
		s3TTL = "    signing_ttl: " + o.s3SigningTTL.String() + "\n"
	}
	presence := ""
	if o.presence != "" {
		presence = "presence:\n" + o.presence
	}
	sync := ""
	if o.sync != "" {
		sync = "sync:\n" + o.sync
	}
	return fmt.Sprintf(`upstream: %q
trusted_proxies: [%s]
geoip:
  database: %q
mirrors:
  - name: %s
    provider: s3
    bucket: %s
    endpoint: %q
    region: %s
    credentials_file: %q
    prefix: %s
    country: US
    location: {lat: 38.9, lon: -77.4}
%s  - name: %s
    provider: gcs
    bucket: %s
    credentials_file: %q
    prefix: %s
    country: DE
    location: {lat: 50.1, lon: 8.7}
  - name: %s
    provider: http
    base_url: %q
    country: SG
    location: {lat: 1.35, lon: 103.8}
%s%s`,
		ep.upstream, strings.Join(fronts, ", "), s.geoip,
		s3Mirror, mirrorBucket, ep.s3, s.s3.Region, s.s3Creds, mirrorPrefix, s3TTL,
		gcsMirror, mirrorBucket, s.gcsSA, mirrorPrefix,
		webMirror, ep.web, presence, sync)
}

// startProxy starts oci-proxy with the three mirrors at ep and one front per place in front of
// it; the proxy trusts exactly the fronts' addresses.
func (s *storage) startProxy(t *testing.T, ep endpoints, o configOptions) (*testenv.Proxy, map[string]*testenv.Front) {
	t.Helper()
	cfg := s.storageConfig(ep, places, o)
	// The GCS client finds the emulator only through the environment, which the proxy inherits
	// when it starts.
	t.Setenv("STORAGE_EMULATOR_HOST", ep.gcs)
	proxy := testenv.StartProxy(t, needProxy(t), cfg)
	fronts := map[string]*testenv.Front{}
	for _, p := range places {
		fronts[p.name] = testenv.StartFront(t, p.front, p.client, proxy.URL)
	}
	return proxy, fronts
}

// TestStoragePulls pulls an image and an index with every client through fronts on three
// continents and checks that the clients get exactly what was pushed and that the mirror of the
// client's country served every blob: versitygw's access log, fake-gcs-server's request log and
// the web mirror's own record show which blobs each one served.
func TestStoragePulls(t *testing.T) {
	s := startStorage(t)
	image := s.reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")
	index := s.reg.PushOCIIndex(t, upstreamPrefix+"/multi:1.0")
	s.mirrorImage(t, image)
	s.mirrorImage(t, index)
	_, fronts := s.startProxy(t, s.direct(), configOptions{})
	_, namedFronts := s.startProxy(t, s.named(t), configOptions{})

	amd64 := index.Child(t, "linux/amd64").Blobs()
	type pull struct {
		client string
		ref    string
		want   testenv.Image
		from   place
		blobs  []string // what the client fetches: daemons keep only their own platform of an index
	}
	pulls := []pull{
		{"docker", "app:1.0", image, fromUS, image.Blobs()},
		{"docker", "multi:1.0", index, fromDE, amd64},
		{"podman", "app:1.0", image, fromDE, image.Blobs()},
		{"podman", "multi:1.0", index, fromSG, amd64},
		{"skopeo", "app:1.0", image, fromSG, image.Blobs()},
		{"skopeo", "multi:1.0", index, fromUS, index.Blobs()},
		{"crane", "app:1.0", image, fromUS, image.Blobs()},
		{"crane", "multi:1.0", index, fromDE, index.Blobs()},
	}
	total := map[string]int{}
	for _, p := range pulls {
		t.Run(p.client+"/"+p.ref+"/from-"+p.from.name, func(t *testing.T) {
			start := time.Now()
			m := s.mark()
			ref := fronts[p.from.name].Ref(p.ref)
			var got testenv.Pulled
			switch p.client {
			case "docker":
				d := testenv.StartDockerd(t)
				d.Rmi(t, ref)
				t.Cleanup(func() { d.Rmi(t, ref) })
				got = d.Pull(t, ref)
			case "podman":
				got = testenv.NewPodman(t).Pull(t, ref)
			case "skopeo":
				got = testenv.NewSkopeo(t).Copy(t, ref)
				checkSkopeoCopy(t, ref, got, p.want)
				got.Digest = p.want.Digest // checked above, with skopeo's rewriting of an index
			case "crane":
				ref = namedFronts[p.from.name].Ref(p.ref)
				got = testenv.NewCrane(t).Pull(t, ref)
			}
			if got.Digest != p.want.Digest {
				t.Errorf("%s pull %s: digest %s, want %s", p.client, ref, got.Digest, p.want.Digest)
			}
			if got.Dir != "" {
				checkBlobs(t, got, p.want)
			}
			served := s.waitServed(t, m, p.from.mirror, p.blobs)
			for mirror, ds := range served {
				total[mirror] += len(ds)
				if mirror == p.from.mirror {
					continue
				}
				for _, d := range ds {
					if slices.Contains(p.blobs, d) {
						t.Errorf("blob %s of a pull from %s was served by %s, want only %s", d, p.from.name, mirror, p.from.mirror)
					}
				}
			}
			t.Logf("%s pulled %s from %s in %v; %s served %d blob GETs", p.client, p.ref, p.from.name,
				time.Since(start).Round(time.Millisecond), p.from.mirror, len(served[p.from.mirror]))
		})
	}
	for _, m := range []string{s3Mirror, gcsMirror, webMirror} {
		if total[m] == 0 {
			t.Errorf("mirror %s served no blob", m)
		}
	}
	t.Logf("blob GETs served: %v", total)
}

// TestStorageSignedURLs checks the URLs the proxy hands out against servers that verify them:
// versitygw refuses a tampered or expired presigned URL and one used with another method; a HEAD
// through the proxy reaches the S3 object; the GCS URL carries a V4 signature by the configured
// key; and X-Forwarded-For counts only from the trusted fronts.
func TestStorageSignedURLs(t *testing.T) {
	s := startStorage(t)
	image := s.reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")
	s.mirrorImage(t, image)
	const ttl = 2 * time.Second
	proxy, fronts := s.startProxy(t, s.direct(), configOptions{s3SigningTTL: ttl})
	layer := image.Layers[0]
	blobPath := "/v2/app/blobs/"

	t.Run("s3", func(t *testing.T) {
		a := blobRedirect(t, http.MethodGet, fronts[fromUS.name].URL+blobPath+layer)
		checkMirror(t, a, s3Mirror, "country")
		u := a.location(t)
		if u.Host != s.s3.Host {
			t.Fatalf("S3 URL host %q, want versitygw's %q", u.Host, s.s3.Host)
		}
		expires := amzExpiry(t, u)
		if status, body := fetch(t, http.MethodGet, u.String()); status != http.StatusOK || testenv.SHA256Digest(body) != layer {
			t.Fatalf("GET of the signed URL: status %d, content %s; want 200 with %s", status, testenv.SHA256Digest(body), layer)
		}

		tampered := *u
		q := tampered.Query()
		sig := []byte(q.Get("X-Amz-Signature"))
		if len(sig) == 0 {
			t.Fatalf("signed URL has no X-Amz-Signature: %s", u.Redacted())
		}
		if i := len(sig) / 2; sig[i] == '0' {
			sig[i] = '1'
		} else {
			sig[i] = '0'
		}
		q.Set("X-Amz-Signature", string(sig))
		tampered.RawQuery = q.Encode()
		if status, body := fetch(t, http.MethodGet, tampered.String()); status != http.StatusForbidden {
			t.Errorf("GET with a changed signature byte: status %d, want 403; body %s", status, body)
		}
		if status, _ := fetch(t, http.MethodHead, u.String()); status != http.StatusForbidden {
			t.Errorf("HEAD with a URL signed for GET: status %d, want 403", status)
		}

		// Expiry has a resolution of one second (X-Amz-Date); a little more makes it certain.
		wait := time.Until(expires) + 1500*time.Millisecond
		if wait > 2*ttl+2*time.Second {
			t.Fatalf("URL expires at %v, later than the configured signing_ttl %v allows", expires, ttl)
		}
		time.Sleep(wait)
		if status, body := fetch(t, http.MethodGet, u.String()); status != http.StatusForbidden {
			t.Errorf("GET %v after expiry: status %d, want 403; body %s", wait.Round(time.Millisecond), status, body)
		}
		// The proxy does not hand out the expired URL again.
		b := blobRedirect(t, http.MethodGet, fronts[fromUS.name].URL+blobPath+layer)
		checkMirror(t, b, s3Mirror, "country")
		if status, _ := fetch(t, http.MethodGet, b.location(t).String()); status != http.StatusOK {
			t.Errorf("GET of a URL signed after the first expired: status %d, want 200", status)
		}
	})

	t.Run("s3-head-through-proxy", func(t *testing.T) {
		blob := image.Layers[1]
		var hosts []string
		c := &http.Client{
			Timeout: 10 * time.Second,
			CheckRedirect: func(r *http.Request, via []*http.Request) error {
				hosts = append(hosts, r.Method+" "+r.URL.Host)
				return nil
			},
		}
		resp, err := c.Head(fronts[fromUS.name].URL + blobPath + blob)
		if err != nil {
			t.Fatalf("HEAD %s: %v", blob, err)
		}
		resp.Body.Close()
		size := s.s3Size(t, blob)
		if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
			t.Errorf("HEAD through the proxy: status %d, Content-Length %d; want 200, %d", resp.StatusCode, resp.ContentLength, size)
		}
		if want := []string{"HEAD " + s.s3.Host}; !slices.Equal(hosts, want) {
			t.Errorf("redirects followed %v, want %v", hosts, want)
		}
	})

	t.Run("gcs", func(t *testing.T) {
		a := blobRedirect(t, http.MethodGet, fronts[fromDE.name].URL+blobPath+layer)
		checkMirror(t, a, gcsMirror, "country")
		u := a.location(t)
		if u.Host != s.gcs.Host {
			t.Fatalf("GCS URL host %q, want fake-gcs-server's %q", u.Host, s.gcs.Host)
		}
		if err := testenv.VerifyGCSV4(u, http.MethodGet, &s.gcsKey.PublicKey); err != nil {
			t.Errorf("GCS URL signature: %v", err)
		}
		other, _ := rsa.GenerateKey(rand.Reader, 2048)
		if testenv.VerifyGCSV4(u, http.MethodGet, &other.PublicKey) == nil {
			t.Error("GCS URL signature verifies with an unrelated key")
		}
		if status, body := fetch(t, http.MethodGet, u.String()); status != http.StatusOK || testenv.SHA256Digest(body) != layer {
			t.Errorf("GET of the GCS URL: status %d, content %s; want 200 with %s", status, testenv.SHA256Digest(body), layer)
		}
	})

	t.Run("http", func(t *testing.T) {
		a := blobRedirect(t, http.MethodGet, fronts[fromSG.name].URL+blobPath+layer)
		checkMirror(t, a, webMirror, "country")
		if got, want := a.location(t).String(), s.web.URL+"/"+blobKey(layer); got != want {
			t.Errorf("Location %q, want %q", got, want)
		}
	})

	t.Run("forwarded-for-only-from-fronts", func(t *testing.T) {
		// Straight to the proxy from 127.0.0.1, which it does not trust: the header claiming
		// Germany must be ignored, so the client cannot be located at all.
		resp := testenv.Send(t, noRedirects, testenv.NewRequest(t, http.MethodGet, proxy.URL+blobPath+layer,
			http.Header{"X-Forwarded-For": {fromDE.client}}))
		if got := resp.Header.Get("X-Mirror-Reason"); got != "fallback:no-geo" {
			t.Errorf("X-Mirror-Reason %q for an untrusted X-Forwarded-For, want fallback:no-geo (X-Mirror %q)",
				got, resp.Header.Get("X-Mirror"))
		}
	})
}

// TestStorageMirrorDown freezes the S3 mirror (SIGSTOP: connections are accepted and then hang,
// the hard case for timeouts) while US clients are sent to it. Blobs it was not yet known to hold
// still reach the client (through the next mirror); once the mirror is set aside, redirects no
// longer wait for its timeout, even for blobs cached as present on it; and after SIGCONT it serves
// again within a bounded time. Then it is stopped for good (connections refused) and restarted
// on the same address: out of the candidates, then back, each within a bounded time.
func TestStorageMirrorDown(t *testing.T) {
	s := startStorage(t)
	image := s.reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")
	fresh := s.reg.Push(t, upstreamPrefix+"/fresh:1.0", testenv.OCIImage(t, 2, 4096, "linux/amd64"))
	s.mirrorImage(t, image)
	s.mirrorImage(t, fresh)
	var unseen []string
	for range 16 {
		unseen = append(unseen, s.randomBlob(t))
	}
	nextUnseen := func(t *testing.T) string {
		t.Helper()
		if len(unseen) == 0 {
			t.Fatal("out of unseen blobs")
		}
		d := unseen[0]
		unseen = unseen[1:]
		return d
	}
	const timeout = 500 * time.Millisecond
	proxy, fronts := s.startProxy(t, s.direct(), configOptions{presence: "  timeout: 500ms\n  health_after: 2\n  backoff: 2s\n"})
	us := fronts[fromUS.name].URL + "/v2/app/blobs/"
	cached := image.Layers[0]

	a := blobRedirect(t, http.MethodGet, us+cached)
	checkMirror(t, a, s3Mirror, "country")
	if status, _ := fetch(t, http.MethodGet, a.location(t).String()); status != http.StatusOK {
		t.Fatalf("S3 mirror before the fault: status %d", status)
	}

	vgw := s.s3.Proc.Cmd.Process
	if err := vgw.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP versitygw: %v", err)
	}
	stopped := time.Now()
	continued := false
	resume := func() {
		if !continued {
			continued = true
			if err := vgw.Signal(syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT versitygw: %v", err)
			}
		}
	}
	t.Cleanup(resume)

	// The first check of a blob pays the timeout, then the next mirror serves it.
	b := blobRedirect(t, http.MethodGet, us+nextUnseen(t))
	if b.mirror == s3Mirror || b.mirror == "upstream" {
		t.Errorf("blob redirect with S3 frozen: X-Mirror %q (%s), want another mirror", b.mirror, b.reason)
	}
	if b.latency < timeout {
		t.Errorf("first redirect with S3 frozen took %v, less than the presence timeout %v: was S3 asked?", b.latency, timeout)
	}
	t.Logf("first redirect with S3 frozen: %v, %s (%s)", b.latency.Round(time.Millisecond), b.mirror, b.reason)

	t.Run("pull-of-uncached-blobs", func(t *testing.T) {
		m := s.mark()
		start := time.Now()
		dir := skopeoCopy(t, fronts[fromUS.name].Ref("fresh:1.0"), 90*time.Second)
		checkBlobs(t, testenv.Pulled{Dir: dir, Blobs: blobsOf(t, dir)}, fresh)
		served := s.waitServed(t, m, gcsMirror, fresh.Blobs())
		t.Logf("skopeo pulled an uncached image with S3 frozen in %v; %s served %v",
			time.Since(start).Round(time.Millisecond), gcsMirror, served[gcsMirror])
	})

	// Once the mirror is set aside, a redirect costs no timeout.
	var setAside time.Time
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := blobRedirect(t, http.MethodGet, us+nextUnseen(t))
		if r.mirror != s3Mirror && r.latency < timeout/2 {
			t.Logf("S3 mirror set aside %v after SIGSTOP", time.Since(stopped).Round(time.Millisecond))
			setAside = time.Now()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redirects still wait for the frozen mirror 15s after SIGSTOP: %v, %s", r.latency, r.mirror)
		}
	}
	if !strings.Contains(proxy.Logs(), "mirror set aside") {
		t.Errorf("the proxy did not log that it set %s aside", s3Mirror)
	}
	t.Run("set-aside", func(t *testing.T) {
		// Blobs cached as present on S3 (the one fetched before the fault) and blobs never
		// asked about: none goes to S3 or waits for it.
		for i, d := range []string{cached, image.Layers[1], nextUnseen(t), nextUnseen(t), cached} {
			r := blobRedirect(t, http.MethodGet, us+d)
			if r.mirror != gcsMirror {
				t.Errorf("redirect %d with S3 set aside: X-Mirror %q (%s), want %s", i, r.mirror, r.reason, gcsMirror)
			}
			if r.latency >= timeout*6/10 {
				t.Errorf("redirect %d with S3 set aside took %v: it waited for the frozen mirror (timeout %v)", i, r.latency, timeout)
			}
			t.Logf("redirect %d with S3 set aside: %v, %s (%s)", i, r.latency.Round(time.Millisecond), r.mirror, r.reason)
		}
	})

	t.Run("retried-in-the-background", func(t *testing.T) {
		// Past the first back-off the proxy checks the mirror again, and only in the
		// background: requests meanwhile neither wait for it nor go to it.
		time.Sleep(time.Until(setAside.Add(2*time.Second + 200*time.Millisecond)))
		for i, d := range []string{nextUnseen(t), cached, nextUnseen(t), nextUnseen(t), cached, nextUnseen(t)} {
			r := blobRedirect(t, http.MethodGet, us+d)
			if r.mirror != gcsMirror || r.latency >= timeout*6/10 {
				t.Errorf("redirect %d after the back-off: %v, X-Mirror %q (%s); want %s without waiting for the frozen mirror",
					i, r.latency, r.mirror, r.reason, gcsMirror)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(proxy.Logs(), "mirror still failing") {
			t.Errorf("the proxy did not log a failed retry of %s", s3Mirror)
		}
	})

	resume()
	continuedAt := time.Now()
	t.Run("back", func(t *testing.T) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			r := blobRedirect(t, http.MethodGet, us+cached)
			if r.mirror == s3Mirror {
				if status, body := fetch(t, http.MethodGet, r.location(t).String()); status != http.StatusOK || testenv.SHA256Digest(body) != cached {
					t.Errorf("S3 mirror after SIGCONT: status %d, content %s", status, testenv.SHA256Digest(body))
				}
				t.Logf("S3 mirror back %v after SIGCONT (frozen for %v)", time.Since(continuedAt).Round(time.Millisecond),
					continuedAt.Sub(stopped).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("S3 mirror not used again 20s after SIGCONT: X-Mirror %q (%s)", r.mirror, r.reason)
			}
			time.Sleep(250 * time.Millisecond)
		}
		if !strings.Contains(proxy.Logs(), "mirror healthy again") {
			t.Errorf("the proxy did not log that %s is healthy again", s3Mirror)
		}
	})

	// A mirror that goes away (connections refused) and is restarted: even a blob whose presence
	// and URL are cached stops going to it, through the background probe alone, and goes back to
	// it once it answers again.
	t.Run("stopped-and-restarted", func(t *testing.T) {
		s.s3.Proc.Stop()
		down := time.Now()
		untilMirror(t, "S3 stopped", 15*time.Second, func() bool {
			r := blobRedirect(t, http.MethodGet, us+cached)
			return r.mirror == gcsMirror && r.latency < timeout/2
		})
		t.Logf("stopped S3 mirror out of the candidates %v after it stopped", time.Since(down).Round(time.Millisecond))
		if r := blobRedirect(t, http.MethodGet, us+nextUnseen(t)); r.mirror != gcsMirror || r.latency >= timeout/2 {
			t.Errorf("unseen blob with S3 stopped: %v, X-Mirror %q (%s)", r.latency, r.mirror, r.reason)
		}
		s.s3.Restart(t)
		up := time.Now()
		untilMirror(t, "S3 restarted", 20*time.Second, func() bool {
			r := blobRedirect(t, http.MethodGet, us+cached)
			if r.mirror != s3Mirror {
				return false
			}
			if status, body := fetch(t, http.MethodGet, r.location(t).String()); status != http.StatusOK || testenv.SHA256Digest(body) != cached {
				t.Errorf("restarted S3 mirror: status %d, content %s", status, testenv.SHA256Digest(body))
			}
			return true
		})
		t.Logf("restarted S3 mirror serving again %v after it started", time.Since(up).Round(time.Millisecond))
	})
}

// untilMirror polls ok every 250 ms until it holds, failing the test after limit.
func untilMirror(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// redirectAnswer is the proxy's answer to a blob request.
type redirectAnswer struct {
	status  int
	loc     string
	mirror  string // X-Mirror
	reason  string // X-Mirror-Reason
	latency time.Duration
}

func (a redirectAnswer) location(t *testing.T) *url.URL {
	t.Helper()
	u, err := url.Parse(a.loc)
	if err != nil || u.Host == "" {
		t.Fatalf("Location %q: not an absolute URL", a.loc)
	}
	return u
}

// blobRedirect asks for a blob without following the redirect and times the answer.
func blobRedirect(t *testing.T, method, rawURL string) redirectAnswer {
	t.Helper()
	req := testenv.NewRequest(t, method, rawURL, nil)
	start := time.Now()
	resp := testenv.Send(t, noRedirects, req)
	a := redirectAnswer{
		status: resp.Status, loc: resp.Header.Get("Location"), latency: time.Since(start),
		mirror: resp.Header.Get("X-Mirror"), reason: resp.Header.Get("X-Mirror-Reason"),
	}
	if a.status != http.StatusTemporaryRedirect {
		t.Fatalf("%s %s: status %d, want 307", method, rawURL, a.status)
	}
	return a
}

func checkMirror(t *testing.T, a redirectAnswer, mirror, reason string) {
	t.Helper()
	if a.mirror != mirror || a.reason != reason {
		t.Fatalf("X-Mirror %q, X-Mirror-Reason %q; want %q, %q", a.mirror, a.reason, mirror, reason)
	}
}

// fetch sends an anonymous request to a mirror URL, as a client following the redirect does.
func fetch(t *testing.T, method, rawURL string) (int, []byte) {
	t.Helper()
	a := testenv.Send(t, noRedirects, testenv.NewRequest(t, method, rawURL, nil))
	return a.Status, a.Body
}

// amzExpiry reads when a presigned S3 URL stops working.
func amzExpiry(t *testing.T, u *url.URL) time.Time {
	t.Helper()
	q := u.Query()
	signed, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	secs, err2 := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || err2 != nil {
		t.Fatalf("presigned URL without X-Amz-Date / X-Amz-Expires: %s", u.Redacted())
	}
	return signed.Add(time.Duration(secs) * time.Second)
}

// s3Size is the object's size as versitygw reports it to its root user.
func (s *storage) s3Size(t *testing.T, digest string) int64 {
	t.Helper()
	p := filepath.Join(s.s3.Dir, mirrorBucket, blobKey(digest))
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatalf("S3 object of %s: %v", digest, err)
	}
	return fi.Size()
}

// skopeoCopy copies one image to a dir: directory within timeout and returns the directory.
func skopeoCopy(t *testing.T, ref string, timeout time.Duration) string {
	t.Helper()
	bin := testenv.NewSkopeo(t).Bin
	dir := filepath.Join(t.TempDir(), "skopeo")
	testenv.Run(t, timeout, nil, bin, "--insecure-policy", "copy", "--src-tls-verify=false", "docker://"+ref, "dir:"+dir)
	return dir
}

// blobsOf lists the blobs in a skopeo dir: directory, each verified against its name.
func blobsOf(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if len(e.Name()) != 64 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		d := "sha256:" + e.Name()
		if got := testenv.SHA256Digest(b); got != d {
			t.Fatalf("blob %s has content with digest %s", d, got)
		}
		out = append(out, d)
	}
	return out
}

// mark is a point in the mirrors' logs.
type mark struct{ s3, gcs, web int }

func (s *storage) mark() mark {
	fi, err := os.Stat(s.s3Log)
	var n int
	if err == nil {
		n = int(fi.Size())
	}
	return mark{s3: n, gcs: len(s.gcs.Proc.Output()), web: s.web.Mark()}
}

// versitygw's access log: "... s3_GetObject <key> <request-URI> <status> ...".
// fake-gcs-server's request log: `... \"GET /<bucket>/<key>?... HTTP/1.1\" <status> ...`.
var gcsGet = regexp.MustCompile(`"GET /` + regexp.QuoteMeta(mirrorBucket+"/"+mirrorPrefix) + `sha256/([0-9a-f]{64})[? ][^"]*" (\d{3})`)

// served returns, per mirror, the digests of blobs it answered a GET for (200 or 206) since m.
func (s *storage) served(t *testing.T, m mark) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	add := func(mirror, key string, status string) {
		if status != "200" && status != "206" {
			return
		}
		if h, ok := strings.CutPrefix(key, mirrorPrefix+"sha256/"); ok {
			out[mirror] = append(out[mirror], "sha256:"+h)
		}
	}
	b, err := os.ReadFile(s.s3Log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if len(b) >= m.s3 {
		for _, line := range strings.Split(string(b[m.s3:]), "\n") {
			f := strings.Fields(line)
			if i := slices.Index(f, "s3_GetObject"); i >= 0 && i+3 < len(f) {
				add(s3Mirror, f[i+1], f[i+3])
			}
		}
	}
	for _, sm := range gcsGet.FindAllStringSubmatch(strings.ReplaceAll(s.gcs.Proc.Output()[m.gcs:], `\"`, `"`), -1) {
		add(gcsMirror, mirrorPrefix+"sha256/"+sm[1], sm[2])
	}
	for _, r := range s.web.Since(m.web) {
		if r.Method == http.MethodGet {
			add(webMirror, strings.TrimPrefix(r.Path, "/"), strconv.Itoa(r.Status))
		}
	}
	return out
}

// waitServed waits (briefly: logs are written as requests end) until mirror has served every
// blob in want since m, and returns what every mirror served.
func (s *storage) waitServed(t *testing.T, m mark, mirror string, want []string) map[string][]string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := s.served(t, m)
		var missing []string
		for _, d := range want {
			if !slices.Contains(got[mirror], d) {
				missing = append(missing, d)
			}
		}
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Errorf("%s served no GET of %v; GETs served: %v", mirror, missing, got)
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}
