package geo_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/geo"
)

func TestLocate(t *testing.T) {
	g := openTestGeoIP(t)
	nets := geo.NewNetworkTable([]geo.NetworkRule{
		rule("81.2.69.0/24", "net:eu-west"),
		rule("81.2.0.0/16", "aws:eu-west-2"),
		rule("10.0.0.0/8", "net:office"),
	})
	tests := []struct {
		name string
		l    *geo.Locator
		ip   string
		want geo.Location
	}{
		{"GeoIP and networks", geo.NewLocator(g, nets), "::ffff:81.2.69.142", geo.Location{
			Addr: addr("81.2.69.142"), Country: "GB", Continent: "EU", Lat: 51.51, Lon: -0.13, HasCoords: true, ASN: 20712,
			Tags: []string{"net:eu-west", "aws:eu-west-2"},
		}},
		{"networks only match", geo.NewLocator(g, nets), "10.1.2.3", geo.Location{Addr: addr("10.1.2.3"), Tags: []string{"net:office"}}},
		{"no GeoIP", geo.NewLocator(nil, nets), "81.2.69.142", geo.Location{Addr: addr("81.2.69.142"), Tags: []string{"net:eu-west", "aws:eu-west-2"}}},
		{"no networks", geo.NewLocator(g, nil), "2001:db8:de::1", geo.Location{
			Addr: addr("2001:db8:de::1"), Country: "DE", Continent: "EU", Lat: 50.11, Lon: 8.68, HasCoords: true, ASN: 3320,
		}},
		{"nothing", geo.NewLocator(nil, nil), "192.0.2.1", geo.Location{Addr: addr("192.0.2.1")}},
		{"nil locator", nil, "192.0.2.1", geo.Location{Addr: addr("192.0.2.1")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.l.Locate(addr(tc.ip)), addrs()); diff != "" {
				t.Errorf("Locate(%s) mismatch (-want +got):\n%s", tc.ip, diff)
			}
		})
	}
}
