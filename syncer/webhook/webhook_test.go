package webhook

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

const (
	digestA = "sha256:0f3ac7d4cb9d2bd1e5bb5ae1d9a1a8e3a25e0ed11f3ac56bdbc1e2e3d0d0a9f1"
	digestB = "sha256:3b3692957d439ac1928219a83fac91e7bf96c153725526874673ae1f2023f8d5"
	digestC = "sha256:6ec128e26cd5a9f47d3a1c1d67a1f4f0e5e2b0bd0a93e1d8ee3e8e3e9b8d7c6a"
)

// testTable has a default upstream on a loopback registry, a ghcr.io route and an Artifact
// Registry route, like a configuration with two `routes`.
func testTable(t testing.TB) *upstream.Table {
	t.Helper()
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	tab, err := upstream.NewTable(mustURL("http://127.0.0.2:5000/v2/acme/images/"), []upstream.Route{
		{Prefix: "tools/", Base: mustURL("https://ghcr.io/v2/acme/")},
		{Prefix: "ar/", Base: mustURL("https://us-east1-docker.pkg.dev/v2/proj/repo/")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// event is one event of a distribution 2.8 envelope, with every field the registry writes.
type event struct {
	action, mediaType, digest, repo, url, tag string
}

func (e event) json() map[string]any {
	target := map[string]any{
		"mediaType":  e.mediaType,
		"digest":     e.digest,
		"size":       528,
		"length":     528,
		"repository": e.repo,
	}
	if e.url != "" {
		target["url"] = e.url
	}
	if e.tag != "" {
		target["tag"] = e.tag
	}
	return map[string]any{
		"id":        "f1e0d9a7-3f0c-4c3e-9a3e-2f4b1b4c5d6e",
		"timestamp": "2024-05-02T10:11:12.123456789Z",
		"action":    e.action,
		"target":    target,
		"request": map[string]any{
			"id":        "5b8c7e3a-9f1d-4e2b-8a6c-1d2e3f4a5b6c",
			"addr":      "127.0.0.1:41234",
			"host":      "127.0.0.2:5000",
			"method":    "PUT",
			"useragent": "go-containerregistry/v0.22.1",
		},
		"actor":  map[string]any{},
		"source": map[string]any{"addr": "registry-7d9f:5000", "instanceID": "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"},
	}
}

func envelope(t testing.TB, evs ...event) []byte {
	t.Helper()
	list := make([]map[string]any, 0, len(evs))
	for _, e := range evs {
		list = append(list, e.json())
	}
	b, err := json.MarshalIndent(map[string]any{"events": list}, "", "   ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	ociManifest    = "application/vnd.oci.image.manifest.v1+json"
	ociIndex       = "application/vnd.oci.image.index.v1+json"
	dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	dockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	layerType      = "application/octet-stream"
)

func manifestURL(host, repo, ref string) string {
	return "http://" + host + "/v2/" + repo + "/manifests/" + ref
}

func TestParseRegistryEvents(t *testing.T) {
	ups := testTable(t)
	const reg = "127.0.0.2:5000"
	push := func(mt, repo, tag, digest string) event {
		return event{"push", mt, digest, repo, manifestURL(reg, repo, digest), tag}
	}
	for _, tc := range []struct {
		name string
		body []byte
		want []Push
	}{{
		name: "image pushed by tag, as a client pushes it: blobs, then the manifest",
		body: envelope(t,
			event{"push", layerType, digestB, "acme/images/app", "http://" + reg + "/v2/acme/images/app/blobs/" + digestB, ""},
			event{"push", layerType, digestC, "acme/images/app", "http://" + reg + "/v2/acme/images/app/blobs/" + digestC, ""},
			push(ociManifest, "acme/images/app", "1.0", digestA),
		),
		want: []Push{pushOf("app", "1.0")},
	}, {
		name: "index: children by digest, the index by tag",
		body: envelope(t,
			push(ociManifest, "acme/images/org/app", "", digestB),
			push(ociManifest, "acme/images/org/app", "", digestC),
			push(ociIndex, "acme/images/org/app", "latest", digestA),
		),
		want: []Push{pushOf("org/app", digestB), pushOf("org/app", digestC), pushOf("org/app", "latest")},
	}, {
		name: "docker media types",
		body: envelope(t,
			push(dockerManifest, "acme/images/app", "2.0", digestA),
			push(dockerList, "acme/images/app", "2", digestB),
		),
		want: []Push{pushOf("app", "2.0"), pushOf("app", "2")},
	}, {
		name: "media type with parameters and in other case",
		body: envelope(t, push("Application/VND.oci.image.manifest.v1+json; charset=utf-8", "acme/images/app", "v1", digestA)),
		want: []Push{pushOf("app", "v1")},
	}, {
		name: "pulls, deletes, mounts and blob pushes are skipped",
		body: envelope(t,
			event{"pull", ociManifest, digestA, "acme/images/app", manifestURL(reg, "acme/images/app", digestA), "1.0"},
			event{"delete", "", digestA, "acme/images/app", "", ""},
			event{"mount", layerType, digestB, "acme/images/app", "", ""},
			event{"push", layerType, digestB, "acme/images/app", "", ""},
			event{"push", "application/vnd.oci.image.config.v1+json", digestC, "acme/images/app", "", ""},
			event{"push", "application/vnd.docker.distribution.manifest.v1+prettyjws", digestC, "acme/images/app", "", "old"},
		),
		want: nil,
	}, {
		name: "the same push twice, once with its digest",
		body: envelope(t,
			push(ociManifest, "acme/images/app", "1.0", digestA),
			push(ociManifest, "acme/images/app", "1.0", digestA),
			push(ociManifest, "acme/images/app", "", digestA),
		),
		want: []Push{pushOf("app", "1.0"), pushOf("app", digestA)},
	}, {
		name: "repositories no route serves are dropped",
		body: envelope(t,
			push(ociManifest, "other/app", "1.0", digestA),
			push(ociManifest, "acme/images", "1.0", digestA),
			push(ociManifest, "acme/imagesx/app", "1.0", digestA),
			push(ociManifest, "acme/images/app", "1.0", digestA),
		),
		want: []Push{pushOf("app", "1.0")},
	}, {
		name: "the host of target.url picks the route",
		body: envelope(t,
			event{"push", ociManifest, digestA, "acme/lint", manifestURL("ghcr.io", "acme/lint", "1.0"), "1.0"},
			event{"push", ociManifest, digestA, "acme/images/app", manifestURL("elsewhere.example", "acme/images/app", "1.0"), "1.0"},
		),
		want: []Push{pushOf("tools/lint", "1.0")},
	}, {
		name: "no url: any host",
		body: envelope(t, event{"push", ociManifest, digestA, "acme/lint", "", "1.0"}),
		want: []Push{pushOf("tools/lint", "1.0")},
	}, {
		name: "no events",
		body: []byte(`{"events":[]}`),
		want: nil,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRegistryEvents(tc.body, ups)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			// A tag's push carries the digest of the event (TestParseRegistryEventsDigest);
			// here only what is pushed counts.
			for i, p := range got {
				if p.Ref.IsDigest() && !p.Digest.IsZero() {
					t.Errorf("push %v of a digest carries a digest of its own", p)
				}
				got[i].Digest = oci.Digest{}
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateComparable(oci.Digest{})); diff != "" {
				t.Errorf("pushes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRegistryEventsErrors(t *testing.T) {
	ups := testTable(t)
	const reg = "127.0.0.2:5000"
	push := func(repo, tag, digest string) []byte {
		return envelope(t, event{"push", ociManifest, digest, repo, manifestURL(reg, repo, "x"), tag})
	}
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"empty body", nil},
		{"not JSON", []byte("events: []")},
		{"truncated", []byte(`{"events":[{"action":"push"`)},
		{"no events", []byte(`{}`)},
		{"events null", []byte(`{"events":null}`)},
		{"events not a list", []byte(`{"events":{"action":"push"}}`)},
		{"target not an object", []byte(`{"events":[{"action":"push","target":"app"}]}`)},
		{"a list", []byte(`[{"action":"push"}]`)},
		{"upper-case repository", push("acme/images/App", "1.0", digestA)},
		{"empty repository", push("", "1.0", digestA)},
		{"repository with ..", push("acme/images/../app", "1.0", digestA)},
		{"bad tag", push("acme/images/app", "-1.0", digestA)},
		{"tag with slash", push("acme/images/app", "1/0", digestA)},
		{"no tag, short digest", push("acme/images/app", "", "sha256:0123456789abcdef0")},
		{"no tag, unknown algorithm", push("acme/images/app", "", "md5:"+strings.Repeat("0", 32))},
		{"no tag, no digest", push("acme/images/app", "", "")},
		{"url not absolute", envelope(t, event{"push", ociManifest, digestA, "acme/images/app", "/v2/acme/images/app/manifests/1.0", "1.0"})},
		{"url unparsable", envelope(t, event{"push", ociManifest, digestA, "acme/images/app", "http://[::1/v2/", "1.0"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRegistryEvents(tc.body, ups)
			if err == nil {
				t.Fatalf("no error; pushes %v", got)
			}
			if !errors.Is(err, ErrEvent) {
				t.Errorf("error %v does not wrap ErrEvent", err)
			}
		})
	}
}

// pubsubBody wraps an Artifact Registry notification in a Pub/Sub push request as Pub/Sub
// delivers it.
func pubsubBody(t testing.TB, data string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"message": map[string]any{
			"attributes":   map[string]string{},
			"data":         base64.StdEncoding.EncodeToString([]byte(data)),
			"messageId":    "2070443601311540",
			"message_id":   "2070443601311540",
			"publishTime":  "2024-05-02T10:11:12.345Z",
			"publish_time": "2024-05-02T10:11:12.345Z",
		},
		"subscription": "projects/proj/subscriptions/oci-proxy-sync",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const arImage = "us-east1-docker.pkg.dev/proj/repo/img"

func TestParsePubSub(t *testing.T) {
	ups := testTable(t)
	for _, tc := range []struct {
		name, data string
		want       []Push
	}{
		{"tagged push", `{"action":"INSERT","digest":"` + arImage + `@` + digestA + `","tag":"` + arImage + `:1.0"}`, []Push{pushOf("ar/img", "1.0")}},
		{"untagged push", `{"action":"INSERT","digest":"` + arImage + `@` + digestA + `"}`, []Push{pushOf("ar/img", digestA)}},
		{"nested repository", `{"action":"INSERT","tag":"us-east1-docker.pkg.dev/proj/repo/team/img:v2"}`, []Push{pushOf("ar/team/img", "v2")}},
		{"host in other case", `{"action":"INSERT","tag":"US-EAST1-docker.pkg.dev/proj/repo/img:v2"}`, []Push{pushOf("ar/img", "v2")}},
		{"registry with a port", `{"action":"INSERT","digest":"127.0.0.2:5000/acme/images/app@` + digestB + `"}`, []Push{pushOf("app", digestB)}},
		{"delete", `{"action":"DELETE","digest":"` + arImage + `@` + digestA + `"}`, nil},
		{"delete of a tag", `{"action":"DELETE","tag":"` + arImage + `:1.0"}`, nil},
		{"another action", `{"action":"UPDATE","tag":"` + arImage + `:1.0"}`, nil},
		{"another project", `{"action":"INSERT","tag":"us-east1-docker.pkg.dev/other/repo/img:1.0"}`, nil},
		{"another region", `{"action":"INSERT","tag":"europe-west1-docker.pkg.dev/proj/repo/img:1.0"}`, nil},
		{"the repository itself", `{"action":"INSERT","tag":"us-east1-docker.pkg.dev/proj/repo:1.0"}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePubSub(pubsubBody(t, tc.data), ups)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateComparable(oci.Digest{})); diff != "" {
				t.Errorf("pushes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParsePubSubErrors(t *testing.T) {
	ups := testTable(t)
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"empty body", nil},
		{"not JSON", []byte("message=1")},
		{"no message", []byte(`{"subscription":"projects/p/subscriptions/s"}`)},
		{"message null", []byte(`{"message":null}`)},
		{"no data", []byte(`{"message":{"messageId":"1"}}`)},
		{"base64 garbage", []byte(`{"message":{"data":"!!not base64!!"}}`)},
		{"data not a string", []byte(`{"message":{"data":42}}`)},
		{"data not JSON", pubsubBody(t, "INSERT "+arImage+":1.0")},
		{"data a list", pubsubBody(t, `[{"action":"INSERT"}]`)},
		{"insert of nothing", pubsubBody(t, `{"action":"INSERT"}`)},
		{"no host", pubsubBody(t, `{"action":"INSERT","tag":"proj/repo/img:1.0"}`)},
		{"no tag", pubsubBody(t, `{"action":"INSERT","tag":"`+arImage+`"}`)},
		{"port, not a tag", pubsubBody(t, `{"action":"INSERT","tag":"localhost:5000/img"}`)},
		{"no digest", pubsubBody(t, `{"action":"INSERT","digest":"`+arImage+`"}`)},
		{"digest in the tag field", pubsubBody(t, `{"action":"INSERT","tag":"`+arImage+`@`+digestA+`"}`)},
		{"bad digest", pubsubBody(t, `{"action":"INSERT","digest":"`+arImage+`@sha256:abc"}`)},
		{"upper-case repository", pubsubBody(t, `{"action":"INSERT","tag":"us-east1-docker.pkg.dev/proj/repo/Img:1.0"}`)},
		{"bad tag", pubsubBody(t, `{"action":"INSERT","tag":"`+arImage+`:.1"}`)},
		{"empty repository", pubsubBody(t, `{"action":"INSERT","tag":"us-east1-docker.pkg.dev/:1.0"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePubSub(tc.body, ups)
			if err == nil {
				t.Fatalf("no error; pushes %v", got)
			}
			if !errors.Is(err, ErrEvent) {
				t.Errorf("error %v does not wrap ErrEvent", err)
			}
		})
	}
}

// recorder is a Trigger that keeps what it was given.
type recorder struct {
	mu     sync.Mutex
	pushes []Push
}

func (r *recorder) trigger(_ context.Context, p Push) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pushes = append(r.pushes, p)
	return true
}

// got returns the pushes triggered, without the manifests' digests of tag pushes
// (TestParseRegistryEventsDigest checks those).
func (r *recorder) got() []Push {
	r.mu.Lock()
	defer r.mu.Unlock()
	return withoutDigests(r.pushes)
}

func withoutDigests(ps []Push) []Push {
	out := append([]Push(nil), ps...)
	for i := range out {
		out[i].Digest = oci.Digest{}
	}
	return out
}

const testToken = "s3cret-Token_value"

func newTestHandler(t testing.TB, opts Options) (*webhookHandler, *recorder, *bytes.Buffer) {
	t.Helper()
	rec := &recorder{}
	logs := &bytes.Buffer{}
	if opts.Token == "" {
		opts.Token = testToken
	}
	opts.Upstream = testTable(t)
	opts.Trigger = rec.trigger
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	return h.(*webhookHandler), rec, logs
}

func TestNewHandlerRefuses(t *testing.T) {
	ups := testTable(t)
	trig := func(context.Context, Push) bool { return true }
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no token", Options{Upstream: ups, Trigger: trig}},
		{"no upstream", Options{Token: "t", Trigger: trig}},
		{"no trigger", Options{Token: "t", Upstream: ups}},
		{"negative limit", Options{Token: "t", Upstream: ups, Trigger: trig, MaxBody: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if h, err := NewHandler(tc.opts); err == nil || h != nil {
				t.Errorf("NewHandler = %v, %v; want an error", h, err)
			}
		})
	}
}

func TestWebhookHandler(t *testing.T) {
	regBody := envelope(t,
		event{"push", layerType, digestB, "acme/images/app", "", ""},
		event{"push", ociManifest, digestA, "acme/images/app", manifestURL("127.0.0.2:5000", "acme/images/app", "1.0"), "1.0"},
		event{"push", ociManifest, digestA, "acme/lint", manifestURL("ghcr.io", "acme/lint", "1.0"), "v3"},
	)
	psBody := pubsubBody(t, `{"action":"INSERT","digest":"`+arImage+`@`+digestA+`","tag":"`+arImage+`:1.0"}`)
	bearer := http.Header{"Authorization": {"Bearer " + testToken}}
	for _, tc := range []struct {
		name        string
		method      string
		target      string
		header      http.Header
		body        []byte
		maxBody     int64
		status      int
		want        []Push
		allow       string
		bodyContain string
	}{
		{name: "registry, bearer", method: "POST", target: RegistryPath, header: bearer, body: regBody,
			status: 202, want: []Push{pushOf("app", "1.0"), pushOf("tools/lint", "v3")}},
		{name: "registry, events media type", method: "POST", target: RegistryPath, body: regBody,
			header: http.Header{"Authorization": {"Bearer " + testToken}, "Content-Type": {EventsMediaType}},
			status: 202, want: []Push{pushOf("app", "1.0"), pushOf("tools/lint", "v3")}},
		{name: "bearer scheme in lower case", method: "POST", target: RegistryPath, body: regBody,
			header: http.Header{"Authorization": {"bearer " + testToken}}, status: 202, want: []Push{pushOf("app", "1.0"), pushOf("tools/lint", "v3")}},
		{name: "pubsub, query token", method: "POST", target: PubSubPath + "?token=" + url.QueryEscape(testToken),
			header: http.Header{"Content-Type": {"application/json"}}, body: psBody, status: 202, want: []Push{pushOf("ar/img", "1.0")}},
		{name: "pubsub, another bearer and the query token", method: "POST", target: PubSubPath + "?token=" + testToken,
			header: http.Header{"Authorization": {"Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}}, body: psBody, status: 202, want: []Push{pushOf("ar/img", "1.0")}},
		{name: "nothing to sync is still accepted", method: "POST", target: RegistryPath, header: bearer,
			body: []byte(`{"events":[]}`), status: 202, bodyContain: `"accepted":0`},
		{name: "no token", method: "POST", target: RegistryPath, body: regBody, status: 401},
		{name: "wrong bearer", method: "POST", target: RegistryPath, header: http.Header{"Authorization": {"Bearer " + testToken + "x"}}, body: regBody, status: 401},
		{name: "token prefix", method: "POST", target: RegistryPath, header: http.Header{"Authorization": {"Bearer " + testToken[:5]}}, body: regBody, status: 401},
		{name: "empty bearer", method: "POST", target: RegistryPath, header: http.Header{"Authorization": {"Bearer "}}, body: regBody, status: 401},
		{name: "basic scheme", method: "POST", target: RegistryPath, header: http.Header{"Authorization": {"Basic " + testToken}}, body: regBody, status: 401},
		{name: "token without scheme", method: "POST", target: RegistryPath, header: http.Header{"Authorization": {testToken}}, body: regBody, status: 401},
		{name: "wrong query token", method: "POST", target: PubSubPath + "?token=nope", body: psBody, status: 401},
		{name: "empty query token", method: "POST", target: PubSubPath + "?token=", body: psBody, status: 401},
		{name: "wrong token, bad body: 401 first", method: "POST", target: RegistryPath, body: []byte("{"), status: 401},
		{name: "GET", method: "GET", target: RegistryPath, header: bearer, status: 405, allow: "POST"},
		{name: "PUT", method: "PUT", target: PubSubPath, header: bearer, body: psBody, status: 405, allow: "POST"},
		{name: "GET without token: 405", method: "GET", target: RegistryPath, status: 405, allow: "POST"},
		{name: "unknown path", method: "POST", target: "/webhooks/other", header: bearer, body: regBody, status: 404},
		{name: "path with trailing slash", method: "POST", target: RegistryPath + "/", header: bearer, body: regBody, status: 404},
		{name: "root", method: "GET", target: "/", status: 404},
		{name: "body too large", method: "POST", target: RegistryPath, header: bearer, body: regBody, maxBody: 100, status: 413},
		{name: "body at the limit", method: "POST", target: RegistryPath, header: bearer, body: regBody, maxBody: int64(len(regBody)),
			status: 202, want: []Push{pushOf("app", "1.0"), pushOf("tools/lint", "v3")}},
		{name: "form content", method: "POST", target: RegistryPath, body: regBody,
			header: http.Header{"Authorization": {"Bearer " + testToken}, "Content-Type": {"application/x-www-form-urlencoded"}}, status: 415},
		{name: "bad content type", method: "POST", target: RegistryPath, body: regBody,
			header: http.Header{"Authorization": {"Bearer " + testToken}, "Content-Type": {"application/json; ="}}, status: 415},
		{name: "bad JSON", method: "POST", target: RegistryPath, header: bearer, body: []byte(`{"events":[`), status: 400, bodyContain: "malformed event"},
		{name: "envelope on the pubsub path", method: "POST", target: PubSubPath, header: bearer, body: regBody, status: 400},
		{name: "bad name", method: "POST", target: RegistryPath, header: bearer,
			body: envelope(t, event{"push", ociManifest, digestA, "acme/images/APP", "", "1.0"}), status: 400, bodyContain: "APP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, rec, logs := newTestHandler(t, Options{MaxBody: tc.maxBody})
			req := httptest.NewRequest(tc.method, tc.target, bytes.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header[k] = v
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d; body %q", w.Code, tc.status, w.Body)
			}
			if got := w.Header().Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if tc.status == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if !strings.Contains(w.Body.String(), tc.bodyContain) {
				t.Errorf("body %q does not contain %q", w.Body, tc.bodyContain)
			}
			if diff := cmp.Diff(tc.want, rec.got(), cmpopts.EquateComparable(oci.Digest{})); diff != "" {
				t.Errorf("pushes (-want +got):\n%s", diff)
			}
			if strings.Contains(logs.String(), testToken) {
				t.Errorf("the token is in the log:\n%s", logs)
			}
		})
	}
}

// A 401 must not depend on the body: it is not read.
func TestWebhookUnauthorizedDoesNotReadBody(t *testing.T) {
	h, _, _ := newTestHandler(t, Options{})
	body := &countingReader{r: strings.NewReader(`{"events":[]}`)}
	req := httptest.NewRequest("POST", RegistryPath, body)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", w.Code)
	}
	if body.n != 0 {
		t.Errorf("read %d bytes of an unauthorized body", body.n)
	}
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// The token is compared with the constant-time compare, on fixed-size hashes, whichever way it
// comes.
func TestWebhookTokenComparedInConstantTime(t *testing.T) {
	h, _, _ := newTestHandler(t, Options{})
	var lens []int
	h.compare = func(a, b []byte) int {
		lens = append(lens, len(a), len(b))
		return subtle.ConstantTimeCompare(a, b)
	}
	for _, tc := range []struct {
		target string
		header http.Header
		status int
	}{
		{RegistryPath, http.Header{"Authorization": {"Bearer " + testToken}}, 202},
		{RegistryPath, http.Header{"Authorization": {"Bearer x"}}, 401},
		{RegistryPath + "?token=" + testToken, nil, 202},
		{RegistryPath + "?token=" + strings.Repeat("x", 1000), nil, 401},
	} {
		lens = nil
		req := httptest.NewRequest("POST", tc.target, strings.NewReader(`{"events":[]}`))
		req.Header = tc.header
		if req.Header == nil {
			req.Header = http.Header{}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.status {
			t.Errorf("%s %v: status %d, want %d", tc.target, tc.header, w.Code, tc.status)
		}
		if diff := cmp.Diff([]int{32, 32}, lens); diff != "" {
			t.Errorf("%s %v: compared lengths (-want +got):\n%s", tc.target, tc.header, diff)
		}
	}
}

// The handler's success and failure lines name the route and status but never the token, even
// when the token came in the query.
func TestWebhookLogs(t *testing.T) {
	h, _, logs := newTestHandler(t, Options{})
	for _, target := range []string{
		RegistryPath + "?token=" + testToken,
		RegistryPath + "?token=" + testToken + "-wrong",
		PubSubPath + "?token=" + testToken,
	} {
		req := httptest.NewRequest("POST", target, strings.NewReader(`{"events":[{"action":"push","target":{"mediaType":"`+ociManifest+`","repository":"acme/images/app","tag":"1.0"}}]}`))
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	out := logs.String()
	for _, want := range []string{"route=/webhooks/registry", "repository=app", "ref=1.0", "status=401", "status=400"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, testToken) {
		t.Errorf("the token is in the log:\n%s", out)
	}
}

// Trigger is called before the answer, with the pushes in order, and the request's context.
func TestWebhookTriggerBeforeAnswer(t *testing.T) {
	var got []string
	h, err := NewHandler(Options{
		Token:    testToken,
		Upstream: testTable(t),
		Trigger: func(ctx context.Context, p Push) bool {
			if ctx.Err() != nil {
				t.Errorf("Trigger got a finished context: %v", ctx.Err())
			}
			got = append(got, p.String())
			return true
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := envelope(t,
		event{"push", ociManifest, digestA, "acme/images/app", "", "1.0"},
		event{"push", ociManifest, digestB, "acme/images/app", "", ""},
	)
	req, err := http.NewRequest("POST", srv.URL+RegistryPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", EventsMediaType)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The response was written after Trigger returned, so got is complete here.
	if diff := cmp.Diff([]string{"app:1.0", "app@" + digestB}, got); diff != "" {
		t.Errorf("pushes (-want +got):\n%s", diff)
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content, want string
		ok            bool
	}{
		{"tok\n", "tok", true},
		{"  tok \r\n", "tok", true},
		{"\n", "", false},
		{"", "", false},
	} {
		p := filepath.Join(dir, "token")
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadTokenFile(p)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ReadTokenFile(%q) = %q, %v; want %q, ok %v", tc.content, got, err, tc.want, tc.ok)
		}
	}
	if _, err := ReadTokenFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("no error for a missing file")
	}
}

func TestPushString(t *testing.T) {
	for _, tc := range []struct {
		p    Push
		want string
	}{
		{pushOf("app", "1.0"), "app:1.0"},
		{pushOf("org/app", digestA), "org/app@" + digestA},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func ExampleNewHandler() {
	def, _ := url.Parse("https://us-central1-docker.pkg.dev/v2/oci-proxy/oci-proxy-images/")
	ups, _ := upstream.NewTable(def, nil)
	q := NewQueue(func(ctx context.Context, p Push) { fmt.Println("sync", p) }, 2)
	h, err := NewHandler(Options{Token: "from sync.webhook.token_file", Upstream: ups, Trigger: q.Trigger})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = h // serve it; run q.Run(ctx) alongside
	// Output:
}

// A queue too full to take every push of an event answers 503 with Retry-After, so that the
// registry keeps the event and sends it again; once the workers have made room, the same event
// is accepted, and every push runs once.
func TestWebhookQueueFull(t *testing.T) {
	g := newGate()
	q := NewQueue(g.run, 1, QueueLimit(1))
	var logs bytes.Buffer
	h, err := NewHandler(Options{Token: testToken, Upstream: testTable(t), Trigger: q.Trigger,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	body := envelope(t,
		event{"push", ociManifest, digestA, "acme/images/app", "", "1.0"},
		event{"push", ociManifest, digestB, "acme/images/app", "", "2.0"},
	)
	post := func(t *testing.T) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, RegistryPath, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", EventsMediaType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	// The workers have not started: app:1.0 fills the queue, app:2.0 is refused.
	for attempt := range 2 {
		rec := post(t)
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("attempt %d: status %d, want 503\n%s", attempt, rec.Code, rec.Body)
		}
		if got := rec.Header().Get("Retry-After"); got != "10" {
			t.Errorf("attempt %d: Retry-After %q, want 10", attempt, got)
		}
		if got := rec.Body.String(); !strings.Contains(got, "1 of 2 pushes not queued") {
			t.Errorf("attempt %d: body %q", attempt, got)
		}
	}
	if n := q.Dropped(); n != 2 {
		t.Errorf("Dropped() = %d, want 2 (once per refused attempt)", n)
	}
	if !strings.Contains(logs.String(), "status=503") || !strings.Contains(logs.String(), `reason="queue full"`) {
		t.Errorf("the refusal is not logged:\n%s", logs.String())
	}

	// A worker takes app:1.0, which makes room: the retry is accepted.
	startQueue(t, q)
	if p := g.wait(t); withoutDigests([]Push{p})[0] != pushOf("app", "1.0") {
		t.Fatalf("first run %v, want app:1.0", p)
	}
	if rec := post(t); rec.Code != http.StatusAccepted {
		t.Fatalf("retry with room: status %d, want 202\n%s", rec.Code, rec.Body)
	}
	// app:1.0 was announced again while it ran, so it runs once more (the queue cannot tell a
	// retried event from a new push); then app:2.0, refused at first, runs.
	g.release <- struct{}{}
	for _, want := range []Push{pushOf("app", "1.0"), pushOf("app", "2.0")} {
		if p := g.wait(t); withoutDigests([]Push{p})[0] != want {
			t.Fatalf("run of %v, want %v", p, want)
		}
		g.release <- struct{}{}
	}
	g.none(t, 100*time.Millisecond)
	if n := q.Dropped(); n != 2 {
		t.Errorf("Dropped() = %d after the accepted retry, want still 2", n)
	}
}

// A tag's push carries the manifest's digest, by which it is copied; a bad digest is a bad
// event.
func TestParseRegistryEventsDigest(t *testing.T) {
	ups := testTable(t)
	push := func(digest string) []byte {
		return envelope(t, event{"push", ociManifest, digest, "acme/images/app", "", "1.0"})
	}
	got, err := ParseRegistryEvents(push(digestA), ups)
	if err != nil || len(got) != 1 || got[0].Digest.String() != digestA || got[0].Ref.String() != "1.0" {
		t.Fatalf("pushes %+v, %v; want app:1.0 at %s", got, err, digestA)
	}
	if _, err := ParseRegistryEvents(push("sha256:nothex"), ups); !errors.Is(err, ErrEvent) {
		t.Errorf("a bad target.digest: %v, want ErrEvent", err)
	}
}
