// Command gen writes the GeoIP test databases, testdata/geoip/city.mmdb and asn.mmdb, from the
// records below. Run it from the repository root:
//
//	go run ./testdata/geoip/gen
//
// The output is byte-for-byte reproducible (a fixed build epoch, sorted maps), so a test can check
// that the committed files match this source. Tests and docs rely on these exact records: change
// them together with testdata/geoip/README.md.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// buildEpoch is fixed so that regenerating gives identical files (2025-01-01T00:00:00Z).
const buildEpoch = 1735689600

type record struct {
	network   string
	country   string
	continent string
	hasCoords bool
	lat, lon  float64
	asn       uint32 // 0: no ASN record
}

// Documentation networks (RFC 5737, RFC 3849) and the networks MaxMind's own test databases use,
// so that no real client is ever described by them by mistake.
var records = []record{
	{"81.2.69.0/24", "GB", "EU", true, 51.51, -0.13, 20712},
	{"89.160.20.0/24", "DE", "EU", true, 50.11, 8.68, 3320},
	{"198.51.100.0/24", "FR", "EU", false, 0, 0, 0},
	{"216.160.83.0/24", "US", "NA", true, 47.61, -122.33, 209},
	{"67.43.156.0/24", "US", "NA", true, 38.90, -77.40, 14618},
	{"175.16.199.0/24", "SG", "AS", true, 1.35, 103.82, 4657},
	{"202.196.224.0/24", "JP", "AS", true, 35.68, 139.69, 2497},
	{"200.160.0.0/24", "BR", "SA", true, -23.55, -46.63, 22548},
	{"1.128.0.0/24", "AU", "OC", true, -33.87, 151.21, 1221},
	{"2001:db8:de::/48", "DE", "EU", true, 50.11, 8.68, 3320},
	{"2001:db8:a5::/48", "US", "NA", true, 38.90, -77.40, 14618},
	{"2001:db8:5e::/48", "SG", "AS", true, 1.35, 103.82, 4657},
}

var countryNames = map[string]string{
	"AU": "Australia", "BR": "Brazil", "DE": "Germany", "FR": "France", "GB": "United Kingdom",
	"JP": "Japan", "SG": "Singapore", "US": "United States",
}

var continentNames = map[string]string{
	"AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania", "SA": "South America",
}

var asnOrgs = map[uint32]string{
	209: "CenturyLink Communications, LLC", 1221: "Telstra Pty Ltd", 2497: "Internet Initiative Japan Inc.",
	3320: "Deutsche Telekom AG", 4657: "StarHub Ltd", 14618: "Amazon.com, Inc.",
	20712: "Andrews & Arnold Ltd", 22548: "Nucleo de Inf. e Coord. do Ponto BR - NIC.BR",
}

func main() {
	dir := flag.String("dir", filepath.Join("testdata", "geoip"), "directory to write city.mmdb and asn.mmdb to")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	city, err := newTree("GeoIP2-City", "oci-proxy test City database")
	if err != nil {
		return err
	}
	asn, err := newTree("GeoLite2-ASN", "oci-proxy test ASN database")
	if err != nil {
		return err
	}
	for _, r := range records {
		_, network, err := net.ParseCIDR(r.network)
		if err != nil {
			return fmt.Errorf("record %s: %w", r.network, err)
		}
		if err := city.Insert(network, cityRecord(r)); err != nil {
			return fmt.Errorf("insert %s into the City database: %w", r.network, err)
		}
		if r.asn != 0 {
			if err := asn.Insert(network, mmdbtype.Map{
				"autonomous_system_number":       mmdbtype.Uint32(r.asn),
				"autonomous_system_organization": mmdbtype.String(asnOrgs[r.asn]),
			}); err != nil {
				return fmt.Errorf("insert %s into the ASN database: %w", r.network, err)
			}
		}
	}
	if err := write(city, filepath.Join(dir, "city.mmdb")); err != nil {
		return err
	}
	return write(asn, filepath.Join(dir, "asn.mmdb"))
}

func newTree(dbType, description string) (*mmdbwriter.Tree, error) {
	t, err := mmdbwriter.New(mmdbwriter.Options{
		BuildEpoch:   buildEpoch,
		DatabaseType: dbType,
		Description:  map[string]string{"en": description},
		Languages:    []string{"en"},
		RecordSize:   24,
		// The records live in documentation ranges, which the writer refuses by default.
		IncludeReservedNetworks: true,
	})
	if err != nil {
		return nil, fmt.Errorf("new %s tree: %w", dbType, err)
	}
	return t, nil
}

// cityRecord has the shape of a MaxMind City record, trimmed to what the proxy reads plus the
// names a human looking at a lookup expects.
func cityRecord(r record) mmdbtype.Map {
	names := func(s string) mmdbtype.Map { return mmdbtype.Map{"en": mmdbtype.String(s)} }
	country := mmdbtype.Map{
		"iso_code": mmdbtype.String(r.country),
		"names":    names(countryNames[r.country]),
	}
	m := mmdbtype.Map{
		"continent": mmdbtype.Map{
			"code":  mmdbtype.String(r.continent),
			"names": names(continentNames[r.continent]),
		},
		"country":            country,
		"registered_country": country,
	}
	if r.hasCoords {
		m["location"] = mmdbtype.Map{
			"latitude":        mmdbtype.Float64(r.lat),
			"longitude":       mmdbtype.Float64(r.lon),
			"accuracy_radius": mmdbtype.Uint16(50),
		}
	}
	return m
}

func write(t *mmdbwriter.Tree, path string) error {
	var buf bytes.Buffer
	if _, err := t.WriteTo(&buf); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
