package auth

import (
	"context"
	"io"
	"net/http"
	"testing"
)

// BenchmarkTransportCachedToken is the hot path: a request whose token is cached, through the
// Transport to a registry on loopback. Compare with BenchmarkTransportBare for the cost of
// the Transport itself.
func BenchmarkTransportCachedToken(b *testing.B) {
	f := newFakeUpstream(b, nil)
	c := &http.Client{Transport: NewTransport(nil, Static("alice", "pw"), TransportOptions{})}
	f.set(func(f *fakeUpstream) { f.users["alice"] = "pw" })
	ctx := WithScope(context.Background(), "repository:acme/app:pull")
	u := f.registry.URL + "/v2/acme/app/manifests/1"
	if code, _, _ := get(b, ctx, c, u); code != http.StatusOK {
		b.Fatalf("status %d", code)
	}
	benchGet(b, ctx, c, u)
	if n := len(f.tokenCalls()); n != 1 {
		b.Fatalf("%d token requests, want 1", n)
	}
}

func BenchmarkTransportBare(b *testing.B) {
	f := newFakeUpstream(b, nil)
	f.set(func(f *fakeUpstream) { f.issued["fixed"] = true })
	ctx := context.Background()
	c := &http.Client{Transport: authorizing{"Bearer fixed"}}
	benchGet(b, ctx, c, f.registry.URL+"/v2/acme/app/manifests/1")
}

// authorizing sets a fixed Authorization header, the least any authenticating transport does.
type authorizing struct{ header string }

func (a authorizing) RoundTrip(req *http.Request) (*http.Response, error) {
	return http.DefaultTransport.RoundTrip(withAuthorization(req, a.header))
}

func benchGet(b *testing.B, ctx context.Context, c *http.Client, u string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

func BenchmarkParseChallenge(b *testing.B) {
	const h = `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseChallenge(h); err != nil {
			b.Fatal(err)
		}
	}
}
