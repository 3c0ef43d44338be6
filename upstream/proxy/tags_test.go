package proxy

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var goodLinks = []struct {
	link, client, want string
}{
	{`</v2/acme/app/tags/list?n=2&last=b>; rel="next"`, "tools/app", `</v2/tools/app/tags/list?n=2&last=b>; rel="next"`},
	{`</v2/acme/app/tags/list?last=b&n=2>; rel="next"`, "tools/app", `</v2/tools/app/tags/list?n=2&last=b>; rel="next"`},
	{`<https://ghcr.io/v2/acme/app/tags/list?last=v1.2.3&n=50>; rel="next"`, "app", `</v2/app/tags/list?n=50&last=v1.2.3>; rel="next"`},
	{`<http://evil.example/v2/other/tags/list?last=b&x=1&n=007>;rel=next`, "app", `</v2/app/tags/list?n=7&last=b>; rel="next"`},
	{`</v2/acme/app/tags/list?last=latest>; rel="next"`, "app", `</v2/app/tags/list?last=latest>; rel="next"`},
	{`</v2/acme/app/tags/list?last=v1%2E0>; rel="next"`, "app", `</v2/app/tags/list?last=v1.0>; rel="next"`},
	{`<https://r.example/v2/a/tags/list?n=1&last=a>; rel="prev", <https://r.example/v2/a/tags/list?n=1&last=c>; title="a, b; c"; REL="Next last"`,
		"a", `</v2/a/tags/list?n=1&last=c>; rel="next"`},
	{`  </v2/a/tags/list?n=100000&last=_x>  ;  rel = "next"  `, "a", `</v2/a/tags/list?n=100000&last=_x>; rel="next"`},
}

var badLinks = []struct {
	name, link, client string
}{
	{"empty", "", "app"},
	{"no brackets", `/v2/acme/app/tags/list?n=2&last=b; rel="next"`, "app"},
	{"no rel", `</v2/acme/app/tags/list?n=2&last=b>`, "app"},
	{"rel prev only", `</v2/acme/app/tags/list?n=2&last=b>; rel="prev"`, "app"},
	{"not a tag list", `</v2/acme/app/manifests/latest?last=b>; rel="next"`, "app"},
	{"javascript", `<javascript:alert(1)>; rel="next"`, "app"},
	{"opaque scheme", `<data:/tags/list?last=b>; rel="next"`, "app"},
	{"no last", `</v2/acme/app/tags/list?n=2>; rel="next"`, "app"},
	{"opaque token pagination", `</v2/acme/app/tags/list?n=50&next_page=gAAAA>; rel="next"`, "app"},
	{"last not a tag", `</v2/acme/app/tags/list?last=a%2Fb>; rel="next"`, "app"},
	{"last starts with a dot", `</v2/acme/app/tags/list?last=.b>; rel="next"`, "app"},
	{"two lasts", `</v2/acme/app/tags/list?last=a&last=b>; rel="next"`, "app"},
	{"n zero", `</v2/acme/app/tags/list?n=0&last=b>; rel="next"`, "app"},
	{"n negative", `</v2/acme/app/tags/list?n=-1&last=b>; rel="next"`, "app"},
	{"n signed", `</v2/acme/app/tags/list?n=+1&last=b>; rel="next"`, "app"},
	{"n too large", `</v2/acme/app/tags/list?n=100001&last=b>; rel="next"`, "app"},
	{"n not a number", `</v2/acme/app/tags/list?n=ten&last=b>; rel="next"`, "app"},
	{"bad escape", `</v2/acme/app/tags/list?n=2&last=%zz>; rel="next"`, "app"},
	{"semicolon in query", `</v2/acme/app/tags/list?n=2;last=b>; rel="next"`, "app"},
	{"unterminated quote", `</v2/acme/app/tags/list?last=b>; rel="next`, "app"},
	{"garbage between links", `</v2/a/tags/list?last=a>; rel="prev" junk, </v2/a/tags/list?last=b>; rel="next"`, "app"},
	{"CRLF in quoted value", "</v2/a/tags/list?last=b>; title=\"a\r\nb\"; rel=\"next\"", "app"},
	{"invalid client name", `</v2/acme/app/tags/list?last=b>; rel="next"`, "Tools/App"},
	{"client name with a bracket", `</v2/acme/app/tags/list?last=b>; rel="next"`, "app>; rel=\"x\""},
}

func TestRewriteLink(t *testing.T) {
	for _, tc := range goodLinks {
		t.Run(tc.link, func(t *testing.T) {
			got, ok := RewriteLink(tc.link, tc.client)
			if !ok || got != tc.want {
				t.Errorf("RewriteLink(%q, %q) = %q, %v; want %q", tc.link, tc.client, got, ok, tc.want)
			}
		})
	}
	for _, tc := range badLinks {
		t.Run(tc.name, func(t *testing.T) {
			if got, ok := RewriteLink(tc.link, tc.client); ok {
				t.Errorf("RewriteLink(%q, %q) = %q; want refused", tc.link, tc.client, got)
			}
		})
	}
}

func TestTagsList(t *testing.T) {
	const path = "/v2/acme/app/tags/list?n=2"
	upstreamBody := `{"name":"acme/app","tags":["a","b"],"extra":true}`
	clientBody := `{"name":"tools/app","tags":["a","b"]}`
	const nameUnknown = `{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}`
	const emptyBody = `{"name":"tools/app","tags":[]}`
	tests := []struct {
		name   string
		answer fakeAnswer
		want   reply
	}{
		{name: "relative link",
			answer: fakeAnswer{header: map[string]string{"Content-Type": "application/json",
				"Link": `</v2/acme/app/tags/list?n=2&last=b>; rel="next"`}, body: upstreamBody},
			want: reply{Status: 200, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(clientBody)), "X-Cache": "miss",
				"Link": `</v2/tools/app/tags/list?n=2&last=b>; rel="next"`}, Body: clientBody}},
		{name: "absolute upstream link",
			answer: fakeAnswer{header: map[string]string{"Content-Type": "application/json",
				"Link": `<https://ghcr.io/v2/acme/app/tags/list?last=b&n=2>; rel="next"`}, body: upstreamBody},
			want: reply{Status: 200, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(clientBody)), "X-Cache": "miss",
				"Link": `</v2/tools/app/tags/list?n=2&last=b>; rel="next"`}, Body: clientBody}},
		{name: "junk link dropped",
			answer: fakeAnswer{header: map[string]string{"Content-Type": "application/json",
				"Link": `<https://evil.example/steal?last=b>; rel="next"`}, body: upstreamBody},
			want: reply{Status: 200, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(clientBody)), "X-Cache": "miss"}, Body: clientBody}},
		{name: "no tags, no link",
			answer: fakeAnswer{body: `{"name":"acme/app","tags":null}`},
			want: reply{Status: 200, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(emptyBody)), "X-Cache": "miss"}, Body: emptyBody}},
		{name: "name unknown passes on",
			answer: fakeAnswer{status: 404, header: map[string]string{"Content-Type": "application/json"}, body: nameUnknown},
			want: reply{Status: 404, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(nameUnknown)), "X-Cache": "miss"}, Body: nameUnknown}},
		{name: "not JSON",
			answer: fakeAnswer{body: `<html>`},
			want: reply{Status: 502, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(ociErrorBody("UNKNOWN", msgBadTagList))), "X-Cache": "miss"},
				Body: ociErrorBody("UNKNOWN", msgBadTagList)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := newFakeUpstream(t, map[string]fakeAnswer{"GET " + path: tc.answer})
			p := newTestProxy(u, Options{Now: newFakeClock().Now})
			q := Request{Kind: Tags, Method: "GET", URL: u.base() + "tags/list?n=2", ClientName: "tools/app"}
			if diff := cmp.Diff(tc.want, replyOf(serve(p, q))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestTagsListCached(t *testing.T) {
	u := newFakeUpstream(t, map[string]fakeAnswer{
		"GET /v2/acme/app/tags/list": {body: `{"name":"acme/app","tags":["a"]}`},
	})
	clock := newFakeClock()
	p := newTestProxy(u, Options{Now: clock.Now, TagTTL: 10 * time.Second})
	q := Request{Kind: Tags, Method: "GET", URL: u.base() + "tags/list", ClientName: "tools/app"}
	other := q
	other.ClientName = "mirror/app" // another route onto the same upstream repository
	var got []string
	for _, s := range []struct {
		q     Request
		after time.Duration
	}{{q, 0}, {q, 9 * time.Second}, {other, 0}, {q, time.Second}} {
		clock.Advance(s.after)
		rec := serve(p, s.q)
		got = append(got, rec.Header().Get("X-Cache")+" "+rec.Body.String())
	}
	want := []string{
		`miss {"name":"tools/app","tags":["a"]}`,
		`hit {"name":"tools/app","tags":["a"]}`,
		`miss {"name":"mirror/app","tags":["a"]}`,
		`miss {"name":"tools/app","tags":["a"]}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestReferrers(t *testing.T) {
	index := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
	path := "/v2/acme/app/referrers/" + manifestDigest.String() + "?artifactType=application%2Fvnd.example"
	u := newFakeUpstream(t, map[string]fakeAnswer{"GET " + path: {header: map[string]string{
		"Content-Type":        "application/vnd.oci.image.index.v1+json",
		"OCI-Filters-Applied": "artifactType",
		"Link":                `</v2/acme/app/referrers/x?last=y>; rel="next"`,
	}, body: index}})
	clock := newFakeClock()
	p := newTestProxy(u, Options{Now: clock.Now, TagTTL: 10 * time.Second})
	q := Request{Kind: Referrers, Method: "GET", URL: u.srv.URL + path, ClientName: "tools/app", Digest: manifestDigest}
	var got []reply
	for _, d := range []time.Duration{0, 9 * time.Second, time.Second} {
		clock.Advance(d)
		got = append(got, replyOf(serve(p, q)))
	}
	h := map[string]string{"Content-Type": "application/vnd.oci.image.index.v1+json",
		"Oci-Filters-Applied": "artifactType", "Content-Length": strconv.Itoa(len(index))}
	withCache := func(s string) map[string]string {
		m := cloneMap(h)
		m["X-Cache"] = s
		return m
	}
	want := []reply{
		{Status: 200, Header: withCache("miss"), Body: index},
		{Status: 200, Header: withCache("hit"), Body: index},
		{Status: 200, Header: withCache("miss"), Body: index},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	_, accept, _ := u.seen()
	if diff := cmp.Diff([]string{referrersAccept, referrersAccept}, accept); diff != "" {
		t.Errorf("Accept seen upstream (-want +got):\n%s", diff)
	}
}
