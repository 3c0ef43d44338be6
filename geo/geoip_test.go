package geo_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/happy-turtle/oci-proxy/geo"
)

const (
	cityDB = "../testdata/geoip/city.mmdb"
	asnDB  = "../testdata/geoip/asn.mmdb"
)

func openTestGeoIP(t testing.TB) *geo.GeoIP {
	t.Helper()
	g, err := geo.OpenGeoIP(cityDB, asnDB)
	if err != nil {
		t.Fatalf("OpenGeoIP: %v", err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return g
}

// geoipCases are the records of testdata/geoip/README.md.
func geoipCases() []struct {
	ip   string
	want geo.Location
} {
	loc := func(ip, country, continent string, lat, lon float64, asn uint32) geo.Location {
		return geo.Location{Addr: addr(ip), Country: country, Continent: continent, Lat: lat, Lon: lon, HasCoords: true, ASN: asn}
	}
	return []struct {
		ip   string
		want geo.Location
	}{
		{"81.2.69.142", loc("81.2.69.142", "GB", "EU", 51.51, -0.13, 20712)},
		{"89.160.20.1", loc("89.160.20.1", "DE", "EU", 50.11, 8.68, 3320)},
		{"198.51.100.7", geo.Location{Addr: addr("198.51.100.7"), Country: "FR", Continent: "EU"}},
		{"216.160.83.56", loc("216.160.83.56", "US", "NA", 47.61, -122.33, 209)},
		{"67.43.156.1", loc("67.43.156.1", "US", "NA", 38.90, -77.40, 14618)},
		{"175.16.199.1", loc("175.16.199.1", "SG", "AS", 1.35, 103.82, 4657)},
		{"202.196.224.1", loc("202.196.224.1", "JP", "AS", 35.68, 139.69, 2497)},
		{"200.160.0.255", loc("200.160.0.255", "BR", "SA", -23.55, -46.63, 22548)},
		{"1.128.0.0", loc("1.128.0.0", "AU", "OC", -33.87, 151.21, 1221)},
		{"2001:db8:de::1", loc("2001:db8:de::1", "DE", "EU", 50.11, 8.68, 3320)},
		{"2001:db8:a5:ffff::1", loc("2001:db8:a5:ffff::1", "US", "NA", 38.90, -77.40, 14618)},
		{"2001:db8:5e::5e", loc("2001:db8:5e::5e", "SG", "AS", 1.35, 103.82, 4657)},
		// An IPv4 client seen through a dual-stack socket.
		{"::ffff:81.2.69.142", loc("81.2.69.142", "GB", "EU", 51.51, -0.13, 20712)},
		// No record.
		{"192.0.2.1", geo.Location{Addr: addr("192.0.2.1")}},
		{"10.1.2.3", geo.Location{Addr: addr("10.1.2.3")}},
		{"2001:db8:ffff::1", geo.Location{Addr: addr("2001:db8:ffff::1")}},
		{"81.2.70.1", geo.Location{Addr: addr("81.2.70.1")}},
	}
}

func TestGeoIPLookup(t *testing.T) {
	g := openTestGeoIP(t)
	for _, tc := range geoipCases() {
		t.Run(tc.ip, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, g.Lookup(addr(tc.ip)), addrs()); diff != "" {
				t.Errorf("Lookup(%s) mismatch (-want +got):\n%s", tc.ip, diff)
			}
		})
	}
}

func TestGeoIPPartial(t *testing.T) {
	ip := addr("81.2.69.142")
	tests := []struct {
		name      string
		city, asn string
		want      geo.Location
	}{
		{"city only", cityDB, "", geo.Location{Addr: ip, Country: "GB", Continent: "EU", Lat: 51.51, Lon: -0.13, HasCoords: true}},
		{"asn only", "", asnDB, geo.Location{Addr: ip, ASN: 20712}},
		{"neither", "", "", geo.Location{Addr: ip}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := geo.OpenGeoIP(tc.city, tc.asn)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			if diff := cmp.Diff(tc.want, g.Lookup(ip), addrs()); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGeoIPNil(t *testing.T) {
	var g *geo.GeoIP
	want := geo.Location{Addr: addr("81.2.69.142")}
	if diff := cmp.Diff(want, g.Lookup(addr("::ffff:81.2.69.142")), addrs()); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close on nil: %v", err)
	}
}

func TestGeoIPCountryDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "country.mmdb")
	writeMMDB(t, path, "GeoLite2-Country", "81.2.69.0/24", mmdbtype.Map{
		"continent": mmdbtype.Map{"code": mmdbtype.String("EU")},
		"country":   mmdbtype.Map{"iso_code": mmdbtype.String("GB")},
	})
	g, err := geo.OpenGeoIP(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	want := geo.Location{Addr: addr("81.2.69.142"), Country: "GB", Continent: "EU"}
	if diff := cmp.Diff(want, g.Lookup(addr("81.2.69.142")), addrs()); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func TestGeoIPContinentDerived(t *testing.T) {
	path := filepath.Join(t.TempDir(), "country.mmdb")
	writeMMDB(t, path, "GeoIP2-Country", "81.2.69.0/24", mmdbtype.Map{
		"country": mmdbtype.Map{"iso_code": mmdbtype.String("GB")},
	})
	g, err := geo.OpenGeoIP(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if got := g.Lookup(addr("81.2.69.142")).Continent; got != "EU" {
		t.Errorf("Continent = %q, want EU from the country", got)
	}
}

func TestOpenGeoIPErrors(t *testing.T) {
	dir := t.TempDir()
	notMMDB := filepath.Join(dir, "not.mmdb")
	if err := os.WriteFile(notMMDB, []byte("this is not a MaxMind database\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.mmdb")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(dir, "odd.mmdb")
	writeMMDB(t, odd, "Acme-Whatever", "81.2.69.0/24", mmdbtype.Map{"x": mmdbtype.String("y")})
	missing := filepath.Join(dir, "missing.mmdb")

	tests := []struct {
		name      string
		city, asn string
		wantInErr []string
	}{
		{"missing city", missing, "", []string{missing}},
		{"missing asn", cityDB, missing, []string{missing}},
		{"not an mmdb", notMMDB, "", []string{notMMDB}},
		{"empty file", "", empty, []string{empty}},
		{"unknown database type", odd, "", []string{odd, "Acme-Whatever"}},
		{"ASN database as City", asnDB, "", []string{asnDB, "GeoLite2-ASN", "City or Country"}},
		{"City database as ASN", cityDB, cityDB, []string{cityDB, "GeoIP2-City", "ASN"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := geo.OpenGeoIP(tc.city, tc.asn)
			if err == nil {
				g.Close()
				t.Fatal("OpenGeoIP succeeded, want an error")
			}
			for _, s := range tc.wantInErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

// TestGeoIPCloseWhileLookingUp is for the race detector: a reload closes the old databases while
// requests may still be using them.
func TestGeoIPCloseWhileLookingUp(t *testing.T) {
	g, err := geo.OpenGeoIP(cityDB, asnDB)
	if err != nil {
		t.Fatal(err)
	}
	ip := addr("81.2.69.142")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				loc := g.Lookup(ip)
				if loc.Country != "" && loc.Country != "GB" {
					t.Errorf("Country = %q", loc.Country)
				}
			}
		})
	}
	if err := g.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
	if err := g.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if diff := cmp.Diff(geo.Location{Addr: ip}, g.Lookup(ip), addrs()); diff != "" {
		t.Errorf("Lookup after Close (-want +got):\n%s", diff)
	}
}

// TestGeneratedDatabasesUpToDate checks that the committed databases are what the generator
// writes, so that nobody edits one without the other.
func TestGeneratedDatabasesUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the generator")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to run testdata/geoip/gen: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(goTool, "run", "./testdata/geoip/gen", "-dir", dir)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./testdata/geoip/gen: %v\n%s", err, out)
	}
	for _, name := range []string{"city.mmdb", "asn.mmdb"} {
		want, err := os.ReadFile(filepath.Join("..", "testdata", "geoip", name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("testdata/geoip/%s differs from the generator's output: run `go run ./testdata/geoip/gen` and commit", name)
		}
	}
}

// writeMMDB writes a one-record database of the given type.
func writeMMDB(t *testing.T, path, dbType, network string, rec mmdbtype.Map) {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, RecordSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	_, n, err := net.ParseCIDR(network)
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Insert(n, rec); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// copyDatabases copies the test databases into a temporary directory, where a test may damage them.
func copyDatabases(t *testing.T) (city, asn string) {
	t.Helper()
	dir := t.TempDir()
	city, asn = filepath.Join(dir, "city.mmdb"), filepath.Join(dir, "asn.mmdb")
	for src, dst := range map[string]string{cityDB: city, asnDB: asn} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return city, asn
}

// TestGeoIPFileRewrittenInPlace rewrites the files of open databases the way `: > city.mmdb`,
// `cp new.mmdb city.mmdb` or a download in progress do: same inode, new contents. A memory-mapped
// database would see the change, and a truncated mapping kills the process with SIGBUS on the next
// lookup. The open databases must keep answering, and opening the damaged files must fail.
func TestGeoIPFileRewrittenInPlace(t *testing.T) {
	zero := func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(make([]byte, fi.Size()), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	truncate := func(frac int64) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()*frac/4); err != nil {
				t.Fatal(err)
			}
		}
	}
	swap := func(t *testing.T, path string) {
		other := cityDB
		if filepath.Base(path) == "city.mmdb" {
			other = asnDB
		}
		data, err := os.ReadFile(other)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil { // O_TRUNC: same inode
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		rewrite func(*testing.T, string)
	}{
		{"zeroed", zero},
		{"emptied", truncate(0)},
		{"cut to a quarter", truncate(1)},
		{"cut to three quarters", truncate(3)},
		{"overwritten with the other database", swap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			city, asn := copyDatabases(t)
			g, err := geo.OpenGeoIP(city, asn)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			tc.rewrite(t, city)
			tc.rewrite(t, asn)
			for _, lc := range geoipCases() {
				if diff := cmp.Diff(lc.want, g.Lookup(addr(lc.ip)), addrs()); diff != "" {
					t.Errorf("Lookup(%s) after the rewrite (-want +got):\n%s", lc.ip, diff)
				}
			}
			if err := g.Ready(); err != nil {
				t.Errorf("Ready after the rewrite: %v", err)
			}
			for _, paths := range [][2]string{{city, ""}, {"", asn}} {
				g2, err := geo.OpenGeoIP(paths[0], paths[1])
				if err == nil {
					g2.Close()
					t.Errorf("OpenGeoIP(%q, %q) of the rewritten file succeeded", paths[0], paths[1])
				} else if p := paths[0] + paths[1]; !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not name %s", err, p)
				}
			}
		})
	}
}

func TestOpenGeoIPTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: the size is refused before anything is read.
	if err := f.Truncate(1<<30 + 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := geo.OpenGeoIP(path, "")
	if err == nil {
		g.Close()
		t.Fatal("OpenGeoIP of a file over 1 GiB succeeded")
	}
	for _, s := range []string{path, "1073741825 bytes", "1 GiB"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}
