package proxy

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBlob(t *testing.T) {
	content := strings.Repeat("0123456789", 10000) // several copy buffers
	digest := sha256Digest(content)
	path := "/v2/acme/app/blobs/" + digest.String()
	stored := fakeAnswer{content: true, body: content, header: map[string]string{
		"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest.String()}}
	storage := "https://storage.example/blobs/" + digest.Hex() + "?X-Amz-Signature=abc&X-Amz-Expires=600"
	const unknown = `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`
	tests := []struct {
		name      string
		answer    *fakeAnswer // nil: the upstream is closed
		method    string
		rng       string
		want      reply
		wantBytes []int64
	}{
		{name: "upstream redirect handed on", method: "GET",
			answer: &fakeAnswer{status: 307, header: map[string]string{"Location": storage}},
			want:   reply{Status: 307, Header: map[string]string{"Location": storage}}},
		{name: "302 handed on as 307, rate limits kept", method: "GET",
			answer: &fakeAnswer{status: 302, header: map[string]string{"Location": storage, "RateLimit-Remaining": "9"}},
			want:   reply{Status: 307, Header: map[string]string{"Location": storage, "Ratelimit-Remaining": "9"}}},
		{name: "HEAD redirect handed on", method: "HEAD",
			answer: &fakeAnswer{status: 307, header: map[string]string{"Location": storage}},
			want:   reply{Status: 307, Header: map[string]string{"Location": storage}}},
		{name: "relative redirect refused", method: "GET",
			answer: &fakeAnswer{status: 307, header: map[string]string{"Location": "/storage/blob"}},
			want: reply{Status: 502, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(ociErrorBody("UNKNOWN", msgBadRedirect)))},
				Body: ociErrorBody("UNKNOWN", msgBadRedirect)}},
		{name: "redirect to another scheme refused", method: "GET",
			answer: &fakeAnswer{status: 307, header: map[string]string{"Location": "ftp://storage.example/blob"}},
			want: reply{Status: 502, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(ociErrorBody("UNKNOWN", msgBadRedirect)))},
				Body: ociErrorBody("UNKNOWN", msgBadRedirect)}},
		{name: "bytes streamed", method: "GET", answer: &stored,
			want: reply{Status: 200, Header: map[string]string{"Content-Type": "application/octet-stream",
				"Content-Length": strconv.Itoa(len(content)), "Docker-Content-Digest": digest.String(),
				"Accept-Ranges": "bytes"}, Body: content},
			wantBytes: []int64{int64(len(content))}},
		{name: "range", method: "GET", rng: "bytes=2-5", answer: &stored,
			want: reply{Status: 206, Header: map[string]string{"Content-Type": "application/octet-stream",
				"Content-Length": "4", "Docker-Content-Digest": digest.String(), "Accept-Ranges": "bytes",
				"Content-Range": "bytes 2-5/" + strconv.Itoa(len(content))}, Body: "2345"},
			wantBytes: []int64{4}},
		{name: "HEAD", method: "HEAD", answer: &stored,
			want: reply{Status: 200, Header: map[string]string{"Content-Type": "application/octet-stream",
				"Content-Length": strconv.Itoa(len(content)), "Docker-Content-Digest": digest.String(),
				"Accept-Ranges": "bytes"}}},
		{name: "unknown blob keeps its status and code", method: "GET",
			answer: &fakeAnswer{status: 404, header: map[string]string{"Content-Type": "application/json"}, body: unknown},
			want: reply{Status: 404, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(unknown))}, Body: unknown}},
		{name: "unknown blob HEAD", method: "HEAD",
			answer: &fakeAnswer{status: 404, header: map[string]string{"Content-Type": "application/json"}, body: unknown},
			want: reply{Status: 404, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(unknown))}}},
		{name: "upstream unreachable", method: "GET",
			want: reply{Status: 502, Header: map[string]string{"Content-Type": "application/json",
				"Content-Length": strconv.Itoa(len(ociErrorBody("UNAVAILABLE", msgUnreachable)))},
				Body: ociErrorBody("UNAVAILABLE", msgUnreachable)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			answers := map[string]fakeAnswer{}
			if tc.answer != nil {
				answers["GET "+path] = *tc.answer
			}
			u := newFakeUpstream(t, answers)
			if tc.answer == nil {
				u.srv.Close()
			}
			obs := &countingObserver{}
			p := newTestProxy(u, Options{Observer: obs})
			q := Request{Kind: Blob, Method: tc.method, URL: u.base() + "blobs/" + digest.String(),
				ClientName: "tools/app", Digest: digest, Range: tc.rng, Authorization: "Bearer relayed"}
			if diff := cmp.Diff(tc.want, replyOf(serve(p, q))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantBytes, obs.bytes); diff != "" {
				t.Errorf("bytes observed (-want +got):\n%s", diff)
			}
			if obs.cache != nil {
				t.Errorf("blob counted as a cache outcome: %v", obs.cache)
			}
			if tc.answer == nil {
				return
			}
			auth, _, ranges := u.seen()
			if diff := cmp.Diff([]string{"Bearer relayed"}, auth); diff != "" {
				t.Errorf("Authorization seen upstream (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{tc.rng}, ranges); diff != "" {
				t.Errorf("Range seen upstream (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBlobClientCopied(t *testing.T) {
	u := newFakeUpstream(t, nil)
	c := u.srv.Client()
	New(Options{Client: c})
	if c.CheckRedirect != nil {
		t.Error("New changed the caller's client")
	}
}
