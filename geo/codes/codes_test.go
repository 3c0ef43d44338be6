package codes_test

import (
	"testing"

	"github.com/happy-turtle/oci-proxy/geo/codes"
)

func TestContinentOf(t *testing.T) {
	tests := map[string]string{
		"DE": "EU", "GB": "EU", "RU": "EU", "CY": "EU", "XK": "EU",
		"US": "NA", "MX": "NA", "PA": "NA", "GL": "NA",
		"BR": "SA", "AR": "SA",
		"JP": "AS", "SG": "AS", "TR": "AS", "AM": "AS", "IL": "AS",
		"AU": "OC", "NZ": "OC", "AS": "OC",
		"ZA": "AF", "EG": "AF", "AF": "AS",
		"AQ": "AN", "TF": "AN",
		"": "", "de": "", "ZZ": "", "EU": "", "UK": "", "DEU": "",
	}
	for country, want := range tests {
		if got := codes.ContinentOf(country); got != want {
			t.Errorf("ContinentOf(%q) = %q, want %q", country, got, want)
		}
		if got := codes.ValidCountry(country); got != (want != "") {
			t.Errorf("ValidCountry(%q) = %v", country, got)
		}
	}
}

// Every assigned ISO 3166-1 alpha-2 code, plus XK, has a continent: 249 + 1.
func TestContinentOfCoversISO3166(t *testing.T) {
	n := 0
	for a := 'A'; a <= 'Z'; a++ {
		for b := 'A'; b <= 'Z'; b++ {
			c := string([]rune{a, b})
			if cont := codes.ContinentOf(c); cont != "" {
				n++
				if !codes.ValidContinent(cont) {
					t.Errorf("ContinentOf(%q) = %q, not a continent", c, cont)
				}
			}
		}
	}
	if n != 250 {
		t.Errorf("%d countries have a continent, want 250", n)
	}
}

func TestValidContinent(t *testing.T) {
	for _, c := range []string{"AF", "AN", "AS", "EU", "NA", "OC", "SA"} {
		if !codes.ValidContinent(c) {
			t.Errorf("ValidContinent(%q) = false", c)
		}
	}
	for _, c := range []string{"", "eu", "AP", "EUR", "XX"} {
		if codes.ValidContinent(c) {
			t.Errorf("ValidContinent(%q) = true", c)
		}
	}
}
