package clientip_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/happy-turtle/oci-proxy/geo/clientip"
)

func BenchmarkClientIPFromRequest(b *testing.B) {
	c := clientip.New(trustedForTests(b), clientip.Any)
	r := httptest.NewRequest(http.MethodGet, "/v2/app/blobs/sha256:0", nil)
	r.RemoteAddr = "10.0.0.1:50000"
	r.Header.Set("X-Forwarded-For", "81.2.69.142, 10.0.0.3, 10.0.0.2")
	want := addr("81.2.69.142")
	b.ReportAllocs()
	for b.Loop() {
		if c.FromRequest(r) != want {
			b.Fatal("wrong address")
		}
	}
}

func BenchmarkClientIPForwarded(b *testing.B) {
	c := clientip.New(trustedForTests(b), clientip.Any)
	fwd := []string{`for=81.2.69.142;proto=https, for="[fd00::3]:4711", for=10.0.0.2;by=10.0.0.1`}
	remote, want := addr("10.0.0.1"), addr("81.2.69.142")
	b.ReportAllocs()
	for b.Loop() {
		if c.Resolve(remote, nil, fwd) != want {
			b.Fatal("wrong address")
		}
	}
}

func BenchmarkClientIPUntrusted(b *testing.B) {
	c := clientip.New(trustedForTests(b), clientip.Any)
	r := httptest.NewRequest(http.MethodGet, "/v2/app/blobs/sha256:0", nil)
	r.RemoteAddr = "81.2.69.142:50000"
	r.Header.Set("X-Forwarded-For", "1.1.1.1")
	b.ReportAllocs()
	for b.Loop() {
		c.FromRequest(r)
	}
}
