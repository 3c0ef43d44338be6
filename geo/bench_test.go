package geo_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/happy-turtle/oci-proxy/geo"
)

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
