package geo_test

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/oschwald/geoip2-golang/v2"

	"github.com/happy-turtle/oci-proxy/geo"
	"github.com/happy-turtle/oci-proxy/geo/codes"
)

// fullDecode is what Lookup answered when it decoded whole records with geoip2: the reference for
// the narrow decoding and the record cache.
func fullDecode(t testing.TB, city, asn *geoip2.Reader, a netip.Addr) geo.Location {
	t.Helper()
	a = geo.NormalizeAddr(a)
	loc := geo.Location{Addr: a}
	if city != nil {
		c, err := city.City(a)
		if err != nil {
			t.Fatalf("geoip2 City(%s): %v", a, err)
		}
		loc.Country, loc.Continent = c.Country.ISOCode, c.Continent.Code
		if loc.Continent == "" {
			loc.Continent = codes.ContinentOf(loc.Country)
		}
		if c.Location.HasCoordinates() {
			loc.Lat, loc.Lon, loc.HasCoords = *c.Location.Latitude, *c.Location.Longitude, true
		}
	}
	if asn != nil {
		r, err := asn.ASN(a)
		if err != nil {
			t.Fatalf("geoip2 ASN(%s): %v", a, err)
		}
		loc.ASN = uint32(r.AutonomousSystemNumber)
	}
	return loc
}

func openGeoIP2(t testing.TB, path string) *geoip2.Reader {
	t.Helper()
	r, err := geoip2.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestGeoIPLookupMatchesFullDecode compares Lookup with whole-record decoding over a database of
// 5,000 networks sharing up to 5,000 records, more than the record cache holds, so that lookups
// decode, hit the cache and replace each other's slots. Every address is asked twice.
func TestGeoIPLookupMatchesFullDecode(t *testing.T) {
	path := largeCityDatabase(t, t.TempDir(), 5_000, 0, 5_000)
	g, err := geo.OpenGeoIP(path, asnDB)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	city, asn := openGeoIP2(t, path), openGeoIP2(t, asnDB)
	rng := rand.New(rand.NewPCG(5, 6))
	probes := make([]netip.Addr, 0, 4000)
	for range 3000 {
		// The generator allocates IPv4 networks from 1.0.0.0 upwards, and 5,000 of /21 to /28
		// cover 1.0.0.0/12: most of these addresses have a record, some fall in gaps.
		probes = append(probes, netip.AddrFrom4([4]byte{1, byte(rng.IntN(16)), byte(rng.Uint32()), byte(rng.Uint32())}))
	}
	for _, tc := range geoipCases() {
		probes = append(probes, addr(tc.ip))
	}
	found := 0
	for pass := range 2 {
		for _, a := range probes {
			want, got := fullDecode(t, city, asn, a), g.Lookup(a)
			if diff := cmp.Diff(want, got, addrs()); diff != "" {
				t.Fatalf("pass %d: Lookup(%s) differs from whole-record decoding (-want +got):\n%s", pass, a, diff)
			}
			if pass == 0 && got.Country != "" {
				found++
			}
		}
	}
	if found < len(probes)/2 {
		t.Fatalf("only %d of %d addresses have a record: the test does not exercise decoding", found, len(probes))
	}
}

func TestGeoIPLookupConcurrent(t *testing.T) {
	g := openTestGeoIP(t)
	cases := geoipCases()
	done := make(chan struct{})
	for w := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 500 {
				tc := cases[(i+w)%len(cases)]
				if diff := cmp.Diff(tc.want, g.Lookup(addr(tc.ip)), addrs()); diff != "" {
					t.Errorf("Lookup(%s) (-want +got):\n%s", tc.ip, diff)
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// TestGeoIPReleasedWhileLookingUp closes databases under lookups and collects garbage meanwhile:
// their memory is unmapped once no lookup holds them, and a lookup that still did would crash
// the test.
func TestGeoIPReleasedWhileLookingUp(t *testing.T) {
	ip := addr("81.2.69.142")
	for range 20 {
		g, err := geo.OpenGeoIP(cityDB, asnDB)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for range 300 {
					if c := g.Lookup(ip).Country; c != "" && c != "GB" {
						t.Errorf("Country = %q", c)
					}
				}
			})
		}
		runtime.GC()
		g.Close()
		runtime.GC()
		wg.Wait()
	}
	runtime.GC()
}

// The address cache answers what the databases do, for addresses that share its slots and for
// the same address asked again.
func TestAddrCacheAgreesWithTheDatabases(t *testing.T) {
	g, err := geo.OpenGeoIP(cityDB, asnDB)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	var probes []netip.Addr
	for _, s := range []string{"81.2.69.142", "89.160.20.112", "216.160.83.56", "2001:218::1", "::ffff:81.2.69.142", "192.0.2.1"} {
		probes = append(probes, netip.MustParseAddr(s))
	}
	// Far more addresses than the cache has slots, so that many share one.
	for range 20_000 {
		probes = append(probes, netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}))
	}
	for round := range 2 {
		for _, a := range probes {
			if diff := cmp.Diff(g.LookupUncached(a), g.Lookup(a), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Fatalf("round %d: Lookup(%s) differs from the databases (-want +got):\n%s", round, a, diff)
			}
		}
	}
}
