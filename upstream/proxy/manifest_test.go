package proxy

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	manifestDigest = sha256Digest(manifestBody)
	manifestLen    = strconv.Itoa(len(manifestBody))
	tagPath        = "/v2/acme/app/manifests/1.0"
	digestPath     = "/v2/acme/app/manifests/" + manifestDigest.String()
)

// manifestAnswers is an upstream that knows tag 1.0 and its digest.
func manifestAnswers() map[string]fakeAnswer {
	full := fakeAnswer{header: map[string]string{
		"Content-Type":          manifestType,
		"Docker-Content-Digest": manifestDigest.String(),
		"ETag":                  `"` + manifestDigest.String() + `"`,
	}, body: manifestBody}
	return map[string]fakeAnswer{
		"GET " + tagPath:    full,
		"GET " + digestPath: full,
	}
}

func tagRequest(u *fakeUpstream, method string) Request {
	return Request{Kind: Manifest, Method: method, URL: u.base() + "manifests/1.0", ClientName: "tools/app", Tag: "1.0"}
}

func digestRequest(u *fakeUpstream, method string) Request {
	return Request{Kind: Manifest, Method: method, URL: u.base() + "manifests/" + manifestDigest.String(),
		ClientName: "tools/app", Digest: manifestDigest}
}

func newTestProxy(u *fakeUpstream, opts Options) *Proxy {
	if opts.Client == nil {
		opts.Client = u.srv.Client()
	}
	return New(opts)
}

func TestManifestPassThrough(t *testing.T) {
	full := reply{Status: 200, Header: map[string]string{
		"Content-Type":          manifestType,
		"Content-Length":        manifestLen,
		"Docker-Content-Digest": manifestDigest.String(),
		"Etag":                  `"` + manifestDigest.String() + `"`,
		"X-Cache":               "miss",
	}, Body: manifestBody}
	head := full
	head.Body = ""
	bare := reply{Status: 200, Header: map[string]string{
		"Content-Type":          manifestType,
		"Content-Length":        manifestLen,
		"Docker-Content-Digest": manifestDigest.String(),
		"X-Cache":               "miss",
	}, Body: manifestBody}
	bareHead := bare
	bareHead.Body = ""
	noDigest := fakeAnswer{header: map[string]string{"Content-Type": manifestType}, body: manifestBody}
	tests := []struct {
		name      string
		answers   map[string]fakeAnswer // added to manifestAnswers
		byDigest  bool
		method    string
		want      reply
		wantCalls map[string]int
	}{
		{name: "GET by tag", method: "GET", want: full, wantCalls: map[string]int{"GET " + tagPath: 1}},
		{name: "HEAD by tag asks the upstream for headers only", method: "HEAD", want: head,
			wantCalls: map[string]int{"HEAD " + tagPath: 1}},
		{name: "GET by digest", byDigest: true, method: "GET", want: full,
			wantCalls: map[string]int{"GET " + digestPath: 1}},
		{name: "HEAD by digest", byDigest: true, method: "HEAD", want: head,
			wantCalls: map[string]int{"HEAD " + digestPath: 1}},
		{name: "GET by tag without digest header: sha256 of the body", method: "GET",
			answers: map[string]fakeAnswer{"GET " + tagPath: noDigest}, want: bare,
			wantCalls: map[string]int{"GET " + tagPath: 1}},
		{name: "HEAD by digest without digest header: the digest asked for", byDigest: true, method: "HEAD",
			answers: map[string]fakeAnswer{"GET " + digestPath: noDigest}, want: bareHead,
			wantCalls: map[string]int{"HEAD " + digestPath: 1}},
		{name: "HEAD by tag without digest header falls back to GET", method: "HEAD",
			answers: map[string]fakeAnswer{"GET " + tagPath: noDigest}, want: bareHead,
			wantCalls: map[string]int{"HEAD " + tagPath: 1, "GET " + tagPath: 1}},
		{name: "HEAD by tag without length falls back to GET", method: "HEAD",
			answers: map[string]fakeAnswer{"HEAD " + tagPath: {header: map[string]string{
				"Content-Type": manifestType, "Docker-Content-Digest": manifestDigest.String()}, chunked: true}},
			want: reply{Status: 200, Header: map[string]string{
				"Content-Type":          manifestType,
				"Content-Length":        manifestLen,
				"Docker-Content-Digest": manifestDigest.String(),
				"Etag":                  `"` + manifestDigest.String() + `"`,
				"X-Cache":               "miss",
			}},
			wantCalls: map[string]int{"HEAD " + tagPath: 1, "GET " + tagPath: 1}},
		{name: "GET by tag whose body does not match the upstream's digest", method: "GET",
			answers: map[string]fakeAnswer{"GET " + tagPath: {header: map[string]string{
				"Content-Type": manifestType, "Docker-Content-Digest": manifestDigest.String()}, body: otherBody}},
			want: reply{Status: 502, Header: map[string]string{
				"Content-Type": "application/json", "X-Cache": "miss",
				"Content-Length": strconv.Itoa(len(ociErrorBody("DIGEST_INVALID", msgMismatch))),
			}, Body: ociErrorBody("DIGEST_INVALID", msgMismatch)},
			wantCalls: map[string]int{"GET " + tagPath: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			answers := manifestAnswers()
			for k, v := range tc.answers {
				answers[k] = v
			}
			u := newFakeUpstream(t, answers)
			p := newTestProxy(u, Options{})
			q := tagRequest(u, tc.method)
			if tc.byDigest {
				q = digestRequest(u, tc.method)
			}
			got := replyOf(serve(p, q))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantCalls, u.callsCopy()); diff != "" {
				t.Errorf("upstream requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestManifestAccept(t *testing.T) {
	u := newFakeUpstream(t, manifestAnswers())
	p := newTestProxy(u, Options{})
	docker := "application/vnd.docker.distribution.manifest.v2+json"
	steps := []struct {
		accept     []string
		wantCache  string
		wantAccept string // seen by the upstream; "" when the answer came from the cache
	}{
		{nil, "miss", manifestAccept},
		{[]string{manifestType}, "miss", manifestType},
		{[]string{manifestType}, "hit", ""},
		{[]string{docker + ", " + manifestType}, "miss", docker + ", " + manifestType},
		{[]string{manifestType, docker}, "hit", ""}, // the same set, split and reordered
	}
	var want []string
	for i, s := range steps {
		q := tagRequest(u, "GET")
		q.Accept = s.accept
		rec := serve(p, q)
		if got := rec.Header().Get("X-Cache"); got != s.wantCache {
			t.Errorf("step %d: X-Cache %q, want %q", i, got, s.wantCache)
		}
		if s.wantAccept != "" {
			want = append(want, s.wantAccept)
		}
	}
	_, accept, _ := u.seen()
	if diff := cmp.Diff(want, accept); diff != "" {
		t.Errorf("Accept seen upstream (-want +got):\n%s", diff)
	}
}

func TestDigestCached(t *testing.T) {
	u := newFakeUpstream(t, manifestAnswers())
	clock := newFakeClock()
	obs := &countingObserver{}
	p := newTestProxy(u, Options{Now: clock.Now, Observer: obs})
	var got []string
	for _, method := range []string{"GET", "GET", "HEAD"} {
		rec := serve(p, digestRequest(u, method))
		got = append(got, method+" "+strconv.Itoa(rec.Code)+" "+rec.Header().Get("X-Cache")+" "+strconv.Itoa(rec.Body.Len()))
		clock.Advance(365 * 24 * time.Hour) // a digest's bytes never change
	}
	want := []string{"GET 200 miss " + manifestLen, "GET 200 hit " + manifestLen, "HEAD 200 hit 0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("answers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"GET " + digestPath: 1}, u.callsCopy()); diff != "" {
		t.Errorf("upstream requests (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"manifest/miss": 1, "manifest/hit": 2}, obs.cache); diff != "" {
		t.Errorf("observed (-want +got):\n%s", diff)
	}
}

func TestTagCacheTTL(t *testing.T) {
	missing := "/v2/acme/app/manifests/2.0"
	type step struct {
		at     time.Duration // since the start
		method string
		path   string
		want   string // status and X-Cache
	}
	tests := []struct {
		name      string
		ttl       time.Duration
		steps     []step
		wantCalls map[string]int
	}{
		{name: "tag fresh for TagTTL, then fetched again", ttl: 10 * time.Second, steps: []step{
			{0, "GET", tagPath, "200 miss"},
			{9 * time.Second, "GET", tagPath, "200 hit"},
			{9 * time.Second, "HEAD", tagPath, "200 hit"},
			{10 * time.Second, "GET", tagPath, "200 miss"},
			{11 * time.Second, "GET", tagPath, "200 hit"},
		}, wantCalls: map[string]int{"GET " + tagPath: 2}},
		{name: "a 404 is remembered for 5s at most", ttl: time.Minute, steps: []step{
			{0, "GET", missing, "404 miss"},
			{4 * time.Second, "GET", missing, "404 hit"},
			{5 * time.Second, "GET", missing, "404 miss"},
		}, wantCalls: map[string]int{"GET " + missing: 2}},
		{name: "negative TagTTL: tags always fetched", ttl: -1, steps: []step{
			{0, "GET", tagPath, "200 miss"},
			{0, "GET", tagPath, "200 miss"},
		}, wantCalls: map[string]int{"GET " + tagPath: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newFakeUpstream(t, manifestAnswers())
			clock := newFakeClock()
			start := clock.Now()
			p := newTestProxy(u, Options{Now: clock.Now, TagTTL: tc.ttl})
			for i, s := range tc.steps {
				clock.Advance(start.Add(s.at).Sub(clock.Now()))
				q := tagRequest(u, s.method)
				q.URL = u.srv.URL + s.path
				rec := serve(p, q)
				if got := strconv.Itoa(rec.Code) + " " + rec.Header().Get("X-Cache"); got != s.want {
					t.Errorf("step %d (%s %s at %v): %q, want %q", i, s.method, s.path, s.at, got, s.want)
				}
			}
			if diff := cmp.Diff(tc.wantCalls, u.callsCopy()); diff != "" {
				t.Errorf("upstream requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConcurrentFetchesMerged(t *testing.T) {
	for _, method := range []string{"GET", "HEAD"} {
		t.Run(method, func(t *testing.T) {
			u := newFakeUpstream(t, manifestAnswers())
			release := u.hold()
			defer release()
			p := newTestProxy(u, Options{Now: newFakeClock().Now})
			const n = 16
			var started, done sync.WaitGroup
			started.Add(n)
			got := make([]reply, n)
			for i := range n {
				done.Go(func() {
					started.Done()
					got[i] = replyOf(serve(p, tagRequest(u, method)))
				})
			}
			started.Wait()
			// Let every request reach the flight before the upstream answers; one that arrives
			// later is served from the cache, so this only makes a broken merge visible.
			time.Sleep(50 * time.Millisecond)
			release()
			done.Wait()
			if c := u.count(method + " " + tagPath); c != 1 {
				t.Errorf("upstream got %d %s requests, want 1", c, method)
			}
			for i := range got {
				if got[i].Status != 200 || got[i].Header["Docker-Content-Digest"] != manifestDigest.String() {
					t.Errorf("request %d: %+v", i, got[i])
				}
			}
		})
	}
}

func TestStale(t *testing.T) {
	const ttl, grace = 5 * time.Second, time.Minute
	tests := []struct {
		name       string
		fail       func(u *fakeUpstream)
		wantStatus int // after the grace
		wantLive   map[string]string
	}{
		{name: "upstream answers 503", wantStatus: 503, wantLive: map[string]string{"Retry-After": "7"},
			fail: func(u *fakeUpstream) {
				u.set("GET "+tagPath, fakeAnswer{status: 503, header: map[string]string{"Retry-After": "7"}, body: "<html>down</html>"})
			}},
		{name: "upstream closed", wantStatus: 502, fail: func(u *fakeUpstream) { u.srv.Close() }},
		{name: "upstream does not answer in time", wantStatus: 502, fail: func(u *fakeUpstream) {
			u.set("GET "+tagPath, fakeAnswer{handle: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }})
			u.set("HEAD "+tagPath, fakeAnswer{handle: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newFakeUpstream(t, manifestAnswers())
			clock := newFakeClock()
			logs := &logBuffer{}
			obs := &countingObserver{}
			p := newTestProxy(u, Options{Now: clock.Now, TagTTL: ttl, StaleGrace: grace, Timeout: 200 * time.Millisecond,
				Logger: logs.logger(), Observer: obs})
			if rec := serve(p, tagRequest(u, "GET")); rec.Code != 200 {
				t.Fatalf("first GET: %d", rec.Code)
			}
			tc.fail(u)

			clock.Advance(ttl + grace - time.Second)
			for _, method := range []string{"GET", "HEAD"} {
				got := replyOf(serve(p, tagRequest(u, method)))
				want := reply{Status: 200, Header: map[string]string{
					"Content-Type":          manifestType,
					"Content-Length":        manifestLen,
					"Docker-Content-Digest": manifestDigest.String(),
					"Etag":                  `"` + manifestDigest.String() + `"`,
					"X-Cache":               "stale",
				}, Body: manifestBody}
				if method == "HEAD" {
					want.Body = ""
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s within the grace (-want +got):\n%s", method, diff)
				}
			}
			lines := logs.lines(t, "upstream unavailable, serving a stale answer")
			if len(lines) != 2 {
				t.Fatalf("%d stale log lines, want 2", len(lines))
			}
			if lines[0]["repository"] != "tools/app" || lines[0]["reference"] != "1.0" || lines[0]["err"] == "" || lines[0]["err"] == nil {
				t.Errorf("stale log line %v lacks repository, reference or err", lines[0])
			}

			clock.Advance(2 * time.Second)
			got := replyOf(serve(p, tagRequest(u, "GET")))
			body := ociErrorBody("UNAVAILABLE", msgUnreachable)
			if tc.wantStatus != 502 {
				body = ociErrorBody("UNAVAILABLE", msgUnavailable)
			}
			wantHeader := map[string]string{"Content-Type": "application/json", "Content-Length": strconv.Itoa(len(body)), "X-Cache": "miss"}
			for k, v := range tc.wantLive {
				wantHeader[k] = v
			}
			want := reply{Status: tc.wantStatus, Header: wantHeader, Body: body}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("after the grace (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]int{"manifest/miss": 2, "manifest/stale": 2}, obs.cache); diff != "" {
				t.Errorf("observed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUpstreamErrors(t *testing.T) {
	const unauthorized = `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`
	const denied = `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`
	const unknown = `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`
	const tooMany = `{"errors":[{"code":"TOOMANYREQUESTS","message":"rate limit"}]}`
	challenge := func(h http.Header, q *Request) {
		h.Set("WWW-Authenticate", `Bearer realm="https://images.example/token",scope="repository:`+q.ClientName+`:pull"`)
	}
	upstreamChallenge := map[string]string{"Content-Type": "application/json",
		"WWW-Authenticate": `Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/app:pull"`}
	tests := []struct {
		name      string
		answer    fakeAnswer
		challenge func(http.Header, *Request)
		want      reply // of each of two requests
		wantCalls int
	}{
		{name: "404 keeps its status and code", wantCalls: 1,
			answer: fakeAnswer{status: 404, header: map[string]string{"Content-Type": "application/json"}, body: unknown},
			want: reply{Status: 404, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(unknown)), "X-Cache": "miss"}, Body: unknown}},
		{name: "429 keeps Retry-After and rate limits, not cached", wantCalls: 2,
			answer: fakeAnswer{status: 429, header: map[string]string{"Content-Type": "application/json",
				"Retry-After": "30", "RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "0;w=21600",
				"Docker-RateLimit-Source": "192.0.2.1"}, body: tooMany},
			want: reply{Status: 429, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(tooMany)), "X-Cache": "miss", "Retry-After": "30",
				"Ratelimit-Limit": "100;w=21600", "Ratelimit-Remaining": "0;w=21600",
				"Docker-Ratelimit-Source": "192.0.2.1"}, Body: tooMany}},
		{name: "401 without the upstream's challenge, with the caller's, not cached", wantCalls: 2,
			challenge: challenge,
			answer:    fakeAnswer{status: 401, header: upstreamChallenge, body: unauthorized},
			want: reply{Status: 401, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(unauthorized)), "X-Cache": "miss",
				"Www-Authenticate": `Bearer realm="https://images.example/token",scope="repository:tools/app:pull"`},
				Body: unauthorized}},
		{name: "401 with no challenge hook has no challenge at all", wantCalls: 2,
			answer: fakeAnswer{status: 401, header: upstreamChallenge, body: unauthorized},
			want: reply{Status: 401, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(unauthorized)), "X-Cache": "miss"}, Body: unauthorized}},
		{name: "403 passed on, not cached", wantCalls: 2,
			answer: fakeAnswer{status: 403, header: map[string]string{"Content-Type": "application/json"}, body: denied},
			want: reply{Status: 403, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(denied)), "X-Cache": "miss"}, Body: denied}},
		{name: "500 without a stale copy: the status with an OCI error of the proxy's", wantCalls: 2,
			answer: fakeAnswer{status: 500, body: "internal server error at 10.0.0.7"},
			want: reply{Status: 500, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(ociErrorBody("UNAVAILABLE", msgUnavailable))), "X-Cache": "miss"},
				Body: ociErrorBody("UNAVAILABLE", msgUnavailable)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newFakeUpstream(t, map[string]fakeAnswer{"GET " + tagPath: tc.answer})
			p := newTestProxy(u, Options{Now: newFakeClock().Now, Challenge: tc.challenge})
			for i := range 2 {
				got := replyOf(serve(p, tagRequest(u, "GET")))
				want := tc.want
				if i == 1 && tc.wantCalls == 1 {
					want.Header = cloneMap(want.Header)
					want.Header["X-Cache"] = "hit"
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("request %d (-want +got):\n%s", i, diff)
				}
			}
			if c := u.count("GET " + tagPath); c != tc.wantCalls {
				t.Errorf("upstream got %d requests, want %d", c, tc.wantCalls)
			}
		})
	}
}

func cloneMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func TestRelayedAuthorization(t *testing.T) {
	byAuth := func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		if auth == "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}`))
			return
		}
		// Each client sees its own manifest for the tag.
		w.Header().Set("Content-Type", manifestType)
		_, _ = w.Write([]byte(`{"schemaVersion":2,"for":"` + auth + `"}`))
	}
	digestAnswer := fakeAnswer{handle: func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer B" && r.Header.Get("Authorization") != "Bearer A" {
			w.WriteHeader(401)
			return
		}
		w.Header().Set("Content-Type", manifestType)
		_, _ = w.Write([]byte(manifestBody))
	}}
	u := newFakeUpstream(t, map[string]fakeAnswer{"GET " + tagPath: {handle: byAuth}, "GET " + digestPath: digestAnswer})
	p := newTestProxy(u, Options{Now: newFakeClock().Now})
	steps := []struct {
		auth     string
		byDigest bool
		want     string // status, X-Cache, body
	}{
		{"Bearer A", false, `200 miss {"schemaVersion":2,"for":"Bearer A"}`},
		{"Bearer B", false, `200 miss {"schemaVersion":2,"for":"Bearer B"}`},
		{"Bearer A", false, `200 hit {"schemaVersion":2,"for":"Bearer A"}`},
		{"Bearer B", false, `200 hit {"schemaVersion":2,"for":"Bearer B"}`},
		{"", false, `401 miss {"errors":[{"code":"UNAUTHORIZED","message":"no"}]}`},
		{"Bearer A", true, "200 miss " + manifestBody},
		{"Bearer A", true, "200 hit " + manifestBody},
		{"Bearer B", true, "200 miss " + manifestBody}, // A's copy of a digest is A's too
		{"Bearer C", true, "401 miss "},
	}
	for i, s := range steps {
		q := tagRequest(u, "GET")
		if s.byDigest {
			q = digestRequest(u, "GET")
		}
		q.Authorization = s.auth
		rec := serve(p, q)
		if got := strconv.Itoa(rec.Code) + " " + rec.Header().Get("X-Cache") + " " + rec.Body.String(); got != s.want {
			t.Errorf("step %d (%q): %q, want %q", i, s.auth, got, s.want)
		}
	}
	auth, _, _ := u.seen()
	want := []string{"Bearer A", "Bearer B", "", "Bearer A", "Bearer B", "Bearer C"}
	if diff := cmp.Diff(want, auth); diff != "" {
		t.Errorf("Authorization seen upstream (-want +got):\n%s", diff)
	}
}

func TestManifestTooLarge(t *testing.T) {
	const limit = 1024
	big := `{"schemaVersion":2,"pad":"` + strings.Repeat("x", limit) + `"}`
	exact := `{"schemaVersion":2,"pad":"` + strings.Repeat("x", limit-len(`{"schemaVersion":2,"pad":""}`)) + `"}`
	refused := ociErrorBody("MANIFEST_INVALID", msgTooLarge)
	tests := []struct {
		name       string
		answer     fakeAnswer
		method     string
		wantStatus int
		wantBody   string
		wantCalls  int // after two requests
	}{
		{name: "with Content-Length", answer: fakeAnswer{body: big}, method: "GET",
			wantStatus: 502, wantBody: refused, wantCalls: 2},
		{name: "chunked", answer: fakeAnswer{body: big, chunked: true}, method: "GET",
			wantStatus: 502, wantBody: refused, wantCalls: 2},
		{name: "HEAD announcing too many bytes", answer: fakeAnswer{body: big,
			header: map[string]string{"Docker-Content-Digest": sha256Digest(big).String()}}, method: "HEAD",
			wantStatus: 502, wantBody: "", wantCalls: 2},
		{name: "exactly the limit is served", answer: fakeAnswer{body: exact, chunked: true}, method: "GET",
			wantStatus: 200, wantBody: exact, wantCalls: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newFakeUpstream(t, map[string]fakeAnswer{"GET " + tagPath: tc.answer})
			p := newTestProxy(u, Options{Now: newFakeClock().Now, MaxManifestBytes: limit})
			for i := range 2 {
				rec := serve(p, tagRequest(u, tc.method))
				if rec.Code != tc.wantStatus || rec.Body.String() != tc.wantBody {
					t.Errorf("request %d: %d %q, want %d %q", i, rec.Code, rec.Body.String(), tc.wantStatus, tc.wantBody)
				}
			}
			if c := u.count(tc.method + " " + tagPath); c != tc.wantCalls {
				t.Errorf("upstream got %d requests, want %d", c, tc.wantCalls)
			}
		})
	}
}

func TestDigestMismatch(t *testing.T) {
	tests := []struct {
		name   string
		answer fakeAnswer
		method string
	}{
		{name: "GET: other bytes", method: "GET", answer: fakeAnswer{
			header: map[string]string{"Content-Type": manifestType, "Docker-Content-Digest": manifestDigest.String()}, body: otherBody}},
		{name: "HEAD: other digest named", method: "HEAD", answer: fakeAnswer{
			header: map[string]string{"Content-Type": manifestType, "Docker-Content-Digest": sha256Digest(otherBody).String()}, body: otherBody}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newFakeUpstream(t, map[string]fakeAnswer{"GET " + digestPath: tc.answer})
			logs := &logBuffer{}
			p := newTestProxy(u, Options{Now: newFakeClock().Now, Logger: logs.logger()})
			body := ociErrorBody("DIGEST_INVALID", msgMismatch)
			want := reply{Status: 502, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(body)), "X-Cache": "miss"}, Body: body}
			if tc.method == "HEAD" {
				want.Body = ""
			}
			for i := range 2 {
				if diff := cmp.Diff(want, replyOf(serve(p, digestRequest(u, tc.method)))); diff != "" {
					t.Errorf("request %d (-want +got):\n%s", i, diff)
				}
			}
			if c := u.count(tc.method + " " + digestPath); c != 2 {
				t.Errorf("upstream got %d requests, want 2: a refused answer must not be cached", c)
			}
			if n := len(logs.lines(t, "upstream answer not served")); n != 2 {
				t.Errorf("%d log lines for the refusals, want 2", n)
			}
		})
	}
}

func TestCacheEvictsWithinBudget(t *testing.T) {
	answers := map[string]fakeAnswer{}
	var digests []string
	for i := range 4 {
		body := `{"schemaVersion":2,"n":` + strconv.Itoa(i) + `,"pad":"` + strings.Repeat("x", 1000) + `"}`
		d := sha256Digest(body).String()
		digests = append(digests, d)
		answers["GET /v2/acme/app/manifests/"+d] = fakeAnswer{header: map[string]string{"Content-Type": manifestType}, body: body}
	}
	u := newFakeUpstream(t, answers)
	// Room for about three entries: the fourth evicts the least recently used.
	p := newTestProxy(u, Options{Now: newFakeClock().Now, MaxCacheBytes: 3 * (1100 + entryOverhead + 300)})
	get := func(i int) string {
		d := sha256Digest(answers["GET /v2/acme/app/manifests/"+digests[i]].body)
		q := Request{Kind: Manifest, Method: "GET", URL: u.base() + "manifests/" + digests[i], ClientName: "app", Digest: d}
		return serve(p, q).Header().Get("X-Cache")
	}
	var got []string
	for _, i := range []int{0, 1, 2, 0, 3, 1, 0} {
		got = append(got, strconv.Itoa(i)+" "+get(i))
	}
	// After 0 1 2, 0 is used again, so 3 evicts 1; 1 then evicts 2, and 0 stays.
	want := []string{"0 miss", "1 miss", "2 miss", "0 hit", "3 miss", "1 miss", "0 hit"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if n, used := p.cache.stats(); n != 3 || used > p.cache.max {
		t.Errorf("cache holds %d entries in %d bytes, budget %d", n, used, p.cache.max)
	}
}

func TestCacheOff(t *testing.T) {
	u := newFakeUpstream(t, manifestAnswers())
	p := newTestProxy(u, Options{MaxCacheBytes: -1})
	for range 2 {
		serve(p, digestRequest(u, "GET"))
	}
	if c := u.count("GET " + digestPath); c != 2 {
		t.Errorf("upstream got %d requests, want 2 with the cache off", c)
	}
}
