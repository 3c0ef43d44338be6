package geo_test

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/happy-turtle/oci-proxy/geo"
)

// BenchmarkGeoIPLookup is the common lookup: City and ASN records of an address seen before, so
// both come from the record cache.
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

// BenchmarkGeoIPLookupUncached is BenchmarkGeoIPLookup without the address cache: both search
// trees walked, both records found in the record cache. The difference is what the address cache
// saves each blob request of a pull after its first.
func BenchmarkGeoIPLookupUncached(b *testing.B) {
	g := openTestGeoIP(b)
	ip := addr("81.2.69.142")
	b.ReportAllocs()
	for b.Loop() {
		if g.LookupUncached(ip).Country != "GB" {
			b.Fatal("wrong country")
		}
	}
}

// BenchmarkGeoIPLookupSpread looks up addresses spread over a City database of 20,000 distinct
// records, five times what the record cache holds, in turn, so that most lookups decode theirs.
func BenchmarkGeoIPLookupSpread(b *testing.B) {
	g, probes := spreadDatabase(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		g.Lookup(probes[i%len(probes)])
		i++
	}
}

// BenchmarkGeoIPFullDecode is the reference for the two above: what a lookup cost when it decoded
// whole City and ASN records with geoip2 (names in eight languages, subdivisions, traits).
func BenchmarkGeoIPFullDecode(b *testing.B) {
	city, asn := openGeoIP2(b, cityDB), openGeoIP2(b, asnDB)
	ip := addr("81.2.69.142")
	b.ReportAllocs()
	for b.Loop() {
		if fullDecode(b, city, asn, ip).Country != "GB" {
			b.Fatal("wrong country")
		}
	}
}

// spreadDatabase opens a City database of 20,000 records on 50,000 networks, with 65,536
// addresses in its IPv4 networks to look up.
func spreadDatabase(b *testing.B) (*geo.GeoIP, []netip.Addr) {
	path := largeCityDatabase(b, b.TempDir(), 40_000, 10_000, 20_000)
	g, err := geo.OpenGeoIP(path, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Close() })
	rng := rand.New(rand.NewPCG(9, 10))
	probes := make([]netip.Addr, 1<<16)
	for i := range probes {
		probes[i] = netip.AddrFrom4([4]byte{1, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
	}
	return g, probes
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

// BenchmarkOpenGeoIPLarge loads a database of GeoLite2 City's size, generated first, and reports
// what holding it costs: the file's size, and the heap, resident memory and GC goal that opening it
// adds, measured once before the timed loads; and what a lookup costs when clients are spread over
// the whole address space it covers, so that nearly every record is decoded rather than cached
// (spread-lookup-ns, also measured once). Generating the database takes about 20 s and 2 GB:
//
//	go test -run '^$' -bench OpenGeoIPLarge -benchtime 20x ./geo/
//
// With GEOIP_LARGE_CITY=FILE the database is also copied to FILE, for scripts/bench.sh's
// GEOIP_CITY: the whole service with a database of that size.
func BenchmarkOpenGeoIPLarge(b *testing.B) {
	path := largeCityDatabase(b, b.TempDir(), 2_000_000, 500_000, 150_000)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	if out := os.Getenv("GEOIP_LARGE_CITY"); out != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(out, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	debug.FreeOSMemory() // the generator's garbage is not the database's cost
	before := memoryNow(b)
	g, err := geo.OpenGeoIP(path, "")
	if err != nil {
		b.Fatal(err)
	}
	after := memoryNow(b)
	if city, _ := g.DatabaseTypes(); city != "GeoLite2-City" {
		b.Fatalf("database type %q", city)
	}
	runtime.KeepAlive(g)
	if err := g.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		g, err := geo.OpenGeoIP(path, "")
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Close(); err != nil {
			b.Fatal(err)
		}
	}
	lookupNs := spreadLookups(b, path)
	// After the loop, which would discard metrics reported before it.
	b.ReportMetric(lookupNs, "spread-lookup-ns")
	const mb = 1 << 20
	b.ReportMetric(float64(fi.Size())/mb, "file-MiB")
	b.ReportMetric(float64(after.heap-before.heap)/mb, "heap-MiB")
	b.ReportMetric(float64(after.nextGC-before.nextGC)/mb, "gc-goal-MiB")
	if before.rss > 0 {
		b.ReportMetric(float64(after.rss-before.rss)/mb, "rss-MiB")
	}
}

// spreadLookups returns the mean time of a lookup in the database at path over a million
// addresses drawn from the IPv4 space largeCityDatabase fills.
func spreadLookups(b *testing.B, path string) float64 {
	g, err := geo.OpenGeoIP(path, "")
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	probes := make([]netip.Addr, 1<<20)
	for i := range probes {
		probes[i] = netip.AddrFrom4([4]byte{1 + byte(rng.IntN(60)), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
	}
	start := time.Now()
	for _, a := range probes {
		g.Lookup(a)
	}
	return float64(time.Since(start).Nanoseconds()) / float64(len(probes))
}

type memoryUse struct {
	heap, nextGC, rss int64 // rss 0 where /proc is missing
}

// memoryNow collects garbage and reports the live heap, the heap size at which the next
// collection will start, and the resident set size.
func memoryNow(tb testing.TB) memoryUse {
	tb.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memoryUse{heap: int64(ms.HeapAlloc), nextGC: int64(ms.NextGC)}
	// statm: size, resident, ... in pages.
	if statm, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(statm)); len(f) > 1 {
			if pages, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				m.rss = pages * int64(os.Getpagesize())
			}
		}
	}
	return m
}

// largeCityDatabase writes, to dir, a City database of about the size of GeoLite2 City (60 to
// 70 MB): networks4 IPv4 and networks6 IPv6 networks over `cities` distinct records shaped like
// MaxMind's, with names in its eight languages. It takes tens of seconds and a few GB of memory.
func largeCityDatabase(tb testing.TB, dir string, networks4, networks6, cities int) string {
	tb.Helper()
	rng := rand.New(rand.NewPCG(7, 8))
	langs := []string{"de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"}
	word := func(n int) string {
		const letters = "abcdefghijklmnopqrstuvwxyz"
		b := make([]byte, n)
		for i := range b {
			b[i] = letters[rng.IntN(len(letters))]
		}
		return string(b)
	}
	// Names as MaxMind has them: Latin-script languages mostly share a spelling, the others are
	// two or three bytes a character.
	names := func(all bool) mmdbtype.Map {
		base := word(5 + rng.IntN(10))
		m := mmdbtype.Map{"en": mmdbtype.String(base)}
		if !all && rng.IntN(3) > 0 {
			return m
		}
		for _, l := range langs[:4] {
			m[mmdbtype.String(l)] = mmdbtype.String(base)
		}
		m["pt-BR"] = mmdbtype.String(base)
		m["ja"] = mmdbtype.String(strings.Repeat("ア", 3+rng.IntN(4)))
		m["ru"] = mmdbtype.String(strings.Repeat("Ж", 5+rng.IntN(8)))
		m["zh-CN"] = mmdbtype.String(strings.Repeat("中", 2+rng.IntN(3)))
		return m
	}
	continents := make([]mmdbtype.Map, 7)
	for i := range continents {
		continents[i] = mmdbtype.Map{"code": mmdbtype.String(word(2)), "geoname_id": mmdbtype.Uint32(rng.Uint32()), "names": names(true)}
	}
	type country struct{ continent, country mmdbtype.Map }
	countries := make([]country, 250)
	for i := range countries {
		countries[i] = country{continents[rng.IntN(len(continents))], mmdbtype.Map{
			"geoname_id": mmdbtype.Uint32(rng.Uint32()), "iso_code": mmdbtype.String(strings.ToUpper(word(2))), "names": names(true),
		}}
	}
	records := make([]mmdbtype.Map, cities)
	for i := range records {
		c := countries[rng.IntN(len(countries))]
		records[i] = mmdbtype.Map{
			"city":               mmdbtype.Map{"geoname_id": mmdbtype.Uint32(i + 1), "names": names(false)},
			"continent":          c.continent,
			"country":            c.country,
			"registered_country": countries[rng.IntN(len(countries))].country,
			"location": mmdbtype.Map{
				"accuracy_radius": mmdbtype.Uint16(1 + rng.IntN(1000)),
				"latitude":        mmdbtype.Float64(rng.Float64()*180 - 90),
				"longitude":       mmdbtype.Float64(rng.Float64()*360 - 180),
				"time_zone":       mmdbtype.String(word(6) + "/" + word(8)),
			},
			"postal": mmdbtype.Map{"code": mmdbtype.String(word(5))},
			"subdivisions": mmdbtype.Slice{mmdbtype.Map{
				"geoname_id": mmdbtype.Uint32(rng.Uint32()), "iso_code": mmdbtype.String(word(2)), "names": names(false),
			}},
		}
	}
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType: "GeoLite2-City", RecordSize: 28, Languages: langs,
		IncludeReservedNetworks: true, // made-up networks; some fall in reserved space
		KeyGenerator:            cityKey{},
	})
	if err != nil {
		tb.Fatal(err)
	}
	insert := func(ip net.IP, bits, of int) {
		if err := tree.Insert(&net.IPNet{IP: ip, Mask: net.CIDRMask(bits, of)}, records[rng.IntN(len(records))]); err != nil {
			tb.Fatal(err)
		}
	}
	// IPv4 as allocated space is: runs of adjacent networks of /21 to /28, with gaps, from
	// 1.0.0.0 upwards.
	for i, next := 0, uint64(1)<<24; i < networks4 && next < 224<<24; i++ {
		bits := 21 + rng.IntN(8)
		size := uint64(1) << (32 - bits)
		a := (next + size - 1) &^ (size - 1)
		if rng.IntN(8) == 0 {
			a += size * uint64(1+rng.IntN(4))
		}
		insert(net.IPv4(byte(a>>24), byte(a>>16), byte(a>>8), byte(a)).To4(), bits, 32)
		next = a + size
	}
	// IPv6 in blocks of 16 to 128 adjacent networks of /40 to /56 inside /32 allocations.
	for i := 0; i < networks6; {
		next := uint64(0x24+2*rng.IntN(5))<<56 | uint64(rng.Uint32()&0xffffff)<<32 // the RIRs' 2400::/8 to 2c00::/8
		for range 16 + rng.IntN(113) {
			bits := 40 + rng.IntN(17)
			size := uint64(1) << (64 - bits)
			a := (next + size - 1) &^ (size - 1)
			ip := make(net.IP, 16)
			for j := range 8 {
				ip[j] = byte(a >> (56 - 8*j))
			}
			insert(ip, bits, 128)
			next = a + size
			i++
		}
	}
	path := filepath.Join(dir, "large-city.mmdb")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

// cityKey tells records apart by their city's geoname_id, unique in largeCityDatabase, instead of
// hashing each record's serialisation at every insert.
type cityKey struct{}

func (cityKey) Key(v mmdbtype.DataType) ([]byte, error) {
	id := v.(mmdbtype.Map)["city"].(mmdbtype.Map)["geoname_id"].(mmdbtype.Uint32)
	return []byte{byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}, nil
}
