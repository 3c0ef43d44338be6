package geo_test

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/happy-turtle/oci-proxy/geo"
)

func BenchmarkClientIPFromRequest(b *testing.B) {
	c := geo.NewClientIP(trustedForTests(b), geo.HeaderAny)
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
	c := geo.NewClientIP(trustedForTests(b), geo.HeaderAny)
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
	c := geo.NewClientIP(trustedForTests(b), geo.HeaderAny)
	r := httptest.NewRequest(http.MethodGet, "/v2/app/blobs/sha256:0", nil)
	r.RemoteAddr = "81.2.69.142:50000"
	r.Header.Set("X-Forwarded-For", "1.1.1.1")
	b.ReportAllocs()
	for b.Loop() {
		c.FromRequest(r)
	}
}

func BenchmarkGeoIPLookup(b *testing.B) {
	g := openTestGeoIP(b)
	ip := addr("81.2.69.142")
	b.ReportAllocs()
	for b.Loop() {
		if g.Lookup(ip).Country != "GB" {
			b.Fatal("wrong country")
		}
	}
}

// benchTable is a table the size of AWS's and Google's published ranges together, nested.
func benchTable() (*geo.NetworkTable, []netip.Addr) {
	rng := rand.New(rand.NewPCG(3, 4))
	rules := randomRules(rng, 5000)
	probes := make([]netip.Addr, 1024)
	for i := range probes {
		probes[i] = randomAddrNear(rng, rules)
	}
	return geo.NewNetworkTable(rules), probes
}

func BenchmarkNetworkTableLookup(b *testing.B) {
	table, probes := benchTable()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		table.Lookup(probes[i%len(probes)])
		i++
	}
}

func BenchmarkNetworkTableBuild(b *testing.B) {
	rules := randomRules(rand.New(rand.NewPCG(3, 4)), 5000)
	b.ReportAllocs()
	for b.Loop() {
		geo.NewNetworkTable(rules)
	}
}

func BenchmarkLocate(b *testing.B) {
	table, _ := benchTable()
	l := geo.NewLocator(openTestGeoIP(b), table)
	ip := addr("81.2.69.142")
	b.ReportAllocs()
	for b.Loop() {
		if l.Locate(ip).Country != "GB" {
			b.Fatal("wrong country")
		}
	}
}
