package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// front stands between the proxy and the upstream registry and can fail on demand: pass the
// requests on, answer 429 with Retry-After, or hang up, as an overloaded or dead registry does.
// It also pages tag lists (n, last, a Link to the next page) as GHCR and distribution 3 do:
// distribution 2.8 ignores n.
type front struct {
	srv  *httptest.Server
	mode atomic.Value // "pass", "429" or "down"
}

func startFront(t *testing.T, target string) *front {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &front{}
	f.mode.Store("pass")
	rp := httputil.NewSingleHostReverseProxy(u)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch f.mode.Load() {
		case "429":
			w.Header().Set("Retry-After", "7")
			w.Header().Set("RateLimit-Limit", "100;w=21600")
			w.Header().Set("RateLimit-Remaining", "0;w=21600")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`)
		case "down":
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			if strings.HasSuffix(r.URL.Path, "/tags/list") && r.URL.Query().Get("n") != "" {
				paginate(w, r, rp)
				return
			}
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// paginate answers a tags list request with one page of the registry's full list.
func paginate(w http.ResponseWriter, r *http.Request, next http.Handler) {
	q := r.URL.Query()
	n, err := strconv.Atoi(q.Get("n"))
	if err != nil || n < 1 {
		http.Error(w, "bad n", http.StatusBadRequest)
		return
	}
	full := r.Clone(r.Context())
	full.URL.RawQuery = ""
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, full)
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &list) != nil {
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	sort.Strings(list.Tags)
	if last := q.Get("last"); last != "" {
		i := sort.SearchStrings(list.Tags, last)
		if i < len(list.Tags) && list.Tags[i] == last {
			i++
		}
		list.Tags = list.Tags[i:]
	}
	if len(list.Tags) > n {
		list.Tags = list.Tags[:n]
		w.Header().Set("Link", fmt.Sprintf(`<%s?n=%d&last=%s>; rel="next"`, r.URL.Path, n, list.Tags[n-1]))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(list)
}

// blobBytes reads a blob from the upstream registry with the pusher's credentials.
func blobBytes(t *testing.T, reg *testenv.Registry, repo, digest string) []byte {
	t.Helper()
	ref, err := name.NewDigest(reg.Host+"/"+repo+"@"+digest, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	l, err := remote.Layer(ref, remote.WithAuth(reg.Auth))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// token asks the proxy's token endpoint for a pull token of repo, as user c (nil: anonymous).
func token(t *testing.T, proxyURL, repo string, c *testenv.Creds) string {
	t.Helper()
	req := testenv.NewRequest(t, "GET", proxyURL+"/token?service=oci-proxy&scope=repository:"+repo+":pull", nil)
	if c != nil {
		req.SetBasicAuth(c.User, c.Password)
	}
	a := testenv.Send(t, noRedirects, req)
	var tok struct {
		Token string `json:"token"`
	}
	if a.Status != http.StatusOK || json.Unmarshal(a.Body, &tok) != nil || tok.Token == "" {
		t.Fatalf("token for %s: %d %s", repo, a.Status, a.Body)
	}
	return tok.Token
}

func ociCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code string }
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("not an OCI error body: %s", body)
	}
	return e.Errors[0].Code
}

// TestProxyModeAnswers checks proxy mode's answers themselves: challenges, admission of
// mirrored private blobs, pagination, errors, HEAD, stale serving and rate limits.
func TestProxyModeAnswers(t *testing.T) {
	mirror := testenv.StartMirrorServer(t, "127.0.0.5")
	// The front is made before the setup so that its route can be configured; it is pointed at
	// the registry once that runs.
	var target atomic.Value
	lazy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target.Load().(http.Handler).ServeHTTP(w, r)
	}))
	t.Cleanup(lazy.Close)
	extra := fmt.Sprintf(`  - prefix: flaky/
    upstream: %s/v2/acme/public/
    mode: proxy
mirrors:
  - name: m
    provider: http
    base_url: %s/
    prefix: blobs/
cache: {tag_ttl: 1s, stale_grace: 3s}
`, lazy.URL, mirror.URL)
	s := startTokenSetup(t, extra)
	f := startFront(t, s.reg.URL)
	target.Store(http.Handler(f.srv.Config.Handler))
	for _, tag := range []string{"1.1", "1.2", "2.0"} {
		s.reg.Tag(t, "acme/public/app:1.0", tag)
	}
	layer := s.privApp.Layers[0]
	mirror.Put("/blobs/"+strings.Replace(layer, ":", "/", 1), blobBytes(t, s.reg, "acme/private/app", layer))
	p := s.proxy.URL
	realm := `Bearer realm="` + p + `/token",service="oci-proxy"`

	t.Run("v2 challenges clients without credentials", func(t *testing.T) {
		a := do(t, "GET", p+"/v2/", nil)
		if a.Status != http.StatusUnauthorized || a.Header.Get("WWW-Authenticate") != realm {
			t.Errorf("GET /v2/: %d, WWW-Authenticate %q; want 401 with %q", a.Status, a.Header.Get("WWW-Authenticate"), realm)
		}
		b := do(t, "GET", p+"/v2/", http.Header{"Authorization": {"Bearer " + token(t, p, "pub/app", nil)}})
		if b.Status != http.StatusOK {
			t.Errorf("GET /v2/ with a token: %d", b.Status)
		}
	})

	t.Run("manifest of a client-credentials route without credentials", func(t *testing.T) {
		a := do(t, "GET", p+"/v2/mine/app/manifests/1.0", http.Header{"Accept": {manifestAccept}})
		want := realm + `,scope="repository:mine/app:pull"`
		if a.Status != http.StatusUnauthorized || a.Header.Get("WWW-Authenticate") != want || ociCode(t, a.Body) != "UNAUTHORIZED" {
			t.Errorf("got %d %q %s; want 401 with %q", a.Status, a.Header.Get("WWW-Authenticate"), a.Body, want)
		}
		anon := do(t, "GET", p+"/v2/mine/app/manifests/1.0", http.Header{"Accept": {manifestAccept}, "Authorization": {"Bearer " + token(t, p, "mine/app", nil)}})
		if anon.Status != http.StatusUnauthorized || anon.Header.Get("WWW-Authenticate") != want {
			t.Errorf("with an anonymous token: %d %q; want 401 with the proxy's challenge", anon.Status, anon.Header.Get("WWW-Authenticate"))
		}
		ok := do(t, "GET", p+"/v2/mine/app/manifests/1.0", http.Header{"Accept": {manifestAccept}, "Authorization": {"Bearer " + token(t, p, "mine/app", &s.alice)}})
		if ok.Status != http.StatusOK || ok.Header.Get("Docker-Content-Digest") != s.privApp.Digest {
			t.Errorf("with alice's token: %d %s", ok.Status, ok.Header.Get("Docker-Content-Digest"))
		}
		bad := testenv.NewRequest(t, "GET", p+"/token?service=oci-proxy&scope=repository:mine/app:pull", nil)
		bad.SetBasicAuth("alice", "wrong")
		if got := testenv.Send(t, noRedirects, bad); got.Status != http.StatusUnauthorized {
			t.Errorf("token with a wrong password: %d, want 401", got.Status)
		}
	})

	t.Run("mirrored blob of a client-credentials route", func(t *testing.T) {
		blob := p + "/v2/mine/app/blobs/" + layer
		mark := mirror.Mark()
		a := do(t, "GET", blob, nil)
		if a.Status != http.StatusUnauthorized || a.Header.Get("Location") != "" {
			t.Errorf("without credentials: %d, Location %q; want 401 and no redirect", a.Status, a.Header.Get("Location"))
		}
		anon := do(t, "GET", blob, http.Header{"Authorization": {"Bearer " + token(t, p, "mine/app", nil)}})
		if anon.Status != http.StatusUnauthorized || anon.Header.Get("Location") != "" {
			t.Errorf("with an anonymous token: %d, Location %q; want 401", anon.Status, anon.Header.Get("Location"))
		}
		if got := mirror.Since(mark); len(got) != 0 {
			t.Errorf("the mirror was asked before the client was admitted: %v", got)
		}
		ok := do(t, "GET", blob, http.Header{"Authorization": {"Bearer " + token(t, p, "mine/app", &s.alice)}})
		wantLoc := mirror.URL + "/blobs/" + strings.Replace(layer, ":", "/", 1)
		if ok.Status != http.StatusTemporaryRedirect || ok.Header.Get("Location") != wantLoc || ok.Header.Get("X-Mirror") != "m" {
			t.Errorf("with alice's token: %d, Location %q, X-Mirror %q; want 307 to %s", ok.Status, ok.Header.Get("Location"), ok.Header.Get("X-Mirror"), wantLoc)
		}
	})

	t.Run("tags pagination", func(t *testing.T) {
		a := do(t, "GET", p+"/v2/flaky/app/tags/list?n=2", nil)
		var page struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		if a.Status != http.StatusOK || json.Unmarshal(a.Body, &page) != nil {
			t.Fatalf("tags: %d %s", a.Status, a.Body)
		}
		if page.Name != "flaky/app" || strings.Join(page.Tags, ",") != "1.0,1.1" {
			t.Errorf("first page = %+v, want flaky/app with 1.0, 1.1", page)
		}
		link := a.Header.Get("Link")
		next, ok := strings.CutSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		if !ok || !sameURL("http://x"+next, "http://x/v2/flaky/app/tags/list?last=1.1&n=2") {
			t.Fatalf("Link = %q, want the next page under the client's name", link)
		}
		b := do(t, "GET", p+next, nil)
		if b.Status != http.StatusOK || json.Unmarshal(b.Body, &page) != nil || strings.Join(page.Tags, ",") != "1.2,2.0" || b.Header.Get("Link") != "" {
			t.Errorf("second page: %d %s, Link %q", b.Status, b.Body, b.Header.Get("Link"))
		}
		all := do(t, "GET", p+"/v2/pub/app/tags/list", nil)
		if all.Status != http.StatusOK || json.Unmarshal(all.Body, &page) != nil || page.Name != "pub/app" || len(page.Tags) != 4 {
			t.Errorf("whole list: %d %s", all.Status, all.Body)
		}
	})

	t.Run("missing tag", func(t *testing.T) {
		a := do(t, "GET", p+"/v2/pub/app/manifests/nope", http.Header{"Accept": {manifestAccept}})
		if a.Status != http.StatusNotFound || ociCode(t, a.Body) != "MANIFEST_UNKNOWN" {
			t.Errorf("got %d %s, want 404 MANIFEST_UNKNOWN", a.Status, a.Body)
		}
	})

	t.Run("HEAD manifest", func(t *testing.T) {
		a := do(t, "HEAD", p+"/v2/own/app/manifests/1.0", http.Header{"Accept": {manifestAccept}})
		get := do(t, "GET", p+"/v2/own/app/manifests/1.0", http.Header{"Accept": {manifestAccept}})
		if a.Status != http.StatusOK || a.Header.Get("Docker-Content-Digest") != s.privApp.Digest || len(a.Body) != 0 {
			t.Errorf("HEAD: %d, digest %q, %d body bytes", a.Status, a.Header.Get("Docker-Content-Digest"), len(a.Body))
		}
		if a.Header.Get("Content-Length") != fmt.Sprint(len(get.Body)) || a.Header.Get("Content-Type") != get.Header.Get("Content-Type") {
			t.Errorf("HEAD Content-Length %q, Content-Type %q; GET has %d bytes of %q", a.Header.Get("Content-Length"), a.Header.Get("Content-Type"), len(get.Body), get.Header.Get("Content-Type"))
		}
	})

	t.Run("stale within the grace, a clean error after it", func(t *testing.T) {
		url := p + "/v2/flaky/app/manifests/1.0"
		h := http.Header{"Accept": {manifestAccept}}
		if a := do(t, "GET", url, h); a.Status != http.StatusOK || a.Header.Get("Docker-Content-Digest") != s.pubApp.Digest {
			t.Fatalf("first pull: %d", a.Status)
		}
		f.mode.Store("down")
		defer f.mode.Store("pass")
		time.Sleep(1200 * time.Millisecond) // past tag_ttl
		a := do(t, "GET", url, h)
		if a.Status != http.StatusOK || a.Header.Get("X-Cache") != "stale" || a.Header.Get("Docker-Content-Digest") != s.pubApp.Digest {
			t.Errorf("during the grace: %d, X-Cache %q", a.Status, a.Header.Get("X-Cache"))
		}
		time.Sleep(3 * time.Second) // past stale_grace
		b := do(t, "GET", url, h)
		if b.Status < 500 || ociCode(t, b.Body) != "UNAVAILABLE" {
			t.Errorf("after the grace: %d %s, want a 5xx UNAVAILABLE", b.Status, b.Body)
		}
		if !strings.Contains(s.proxy.Logs(), "stale") {
			t.Error("no log line for the stale answer")
		}
	})

	t.Run("429 keeps Retry-After", func(t *testing.T) {
		f.mode.Store("429")
		defer f.mode.Store("pass")
		a := do(t, "GET", p+"/v2/flaky/app/manifests/2.0", http.Header{"Accept": {manifestAccept}})
		if a.Status != http.StatusTooManyRequests || a.Header.Get("Retry-After") != "7" || a.Header.Get("Ratelimit-Remaining") != "0;w=21600" {
			t.Errorf("got %d, Retry-After %q, RateLimit-Remaining %q", a.Status, a.Header.Get("Retry-After"), a.Header.Get("Ratelimit-Remaining"))
		}
	})

	t.Run("no secrets in answers or logs", func(t *testing.T) {
		a := do(t, "GET", p+"/v2/mine/app/manifests/1.0", http.Header{"Authorization": {"Basic " + "YWxpY2U6" + "d3Jvbmc="}})
		for _, secret := range []string{alicePassword, botPassword} {
			if strings.Contains(string(a.Body), secret) || strings.Contains(fmt.Sprint(a.Header), secret) {
				t.Errorf("an answer carries %q", secret)
			}
		}
		checkNoSecrets(t, s)
	})
}
