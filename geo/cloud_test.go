package geo_test

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/geo"
)

func TestParseAWSRangesSample(t *testing.T) {
	f, err := os.Open("../testdata/cloud/aws-ip-ranges.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := geo.ParseAWSRanges(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []geo.NetworkRule{
		rule("3.80.0.0/12", "aws:us-east-1"),
		rule("3.5.136.0/22", "aws:eu-central-1"),
		rule("52.94.76.0/22", "aws:us-west-2"),
		rule("52.94.76.0/24", "aws:us-west-2"),
		rule("13.250.0.0/15", "aws:ap-southeast-1"),
		rule("2600:1f18::/33", "aws:us-east-1"),
		rule("2a05:d014::/35", "aws:eu-central-1"),
	}
	if diff := cmp.Diff(want, got, addrs()); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func TestParseGCPRangesSample(t *testing.T) {
	f, err := os.Open("../testdata/cloud/gcp-cloud.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := geo.ParseGCPRanges(f)
	if err != nil {
		t.Fatal(err)
	}
	want := []geo.NetworkRule{
		rule("34.1.208.0/20", "gcp:africa-south1"),
		rule("34.23.0.0/16", "gcp:us-east1"),
		rule("35.234.64.0/18", "gcp:europe-west3"),
		rule("34.87.0.0/17", "gcp:asia-southeast1"),
		rule("2600:1900:4020::/44", "gcp:us-east1"),
		rule("2600:1900:40c0::/44", "gcp:europe-west3"),
	}
	if diff := cmp.Diff(want, got, addrs()); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func TestParseRangesHostBitsMasked(t *testing.T) {
	got, err := geo.ParseAWSRanges(strings.NewReader(`{"prefixes":[{"ip_prefix":"3.80.1.2/12","region":"us-east-1"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]geo.NetworkRule{rule("3.80.0.0/12", "aws:us-east-1")}, got, addrs()); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

// awsBadInputs and gcpBadInputs map malformed files to a part of the error they must give.
func awsBadInputs() map[string]string {
	return map[string]string{
		``:                  "unexpected end of JSON input",
		`not json`:          "invalid character",
		`[]`:                "cannot unmarshal array",
		`{}`:                "no prefixes",
		`{"prefixes":[]}`:   "no prefixes",
		`{"prefixes":[{}]}`: "prefixes[0]: ip_prefix is missing",
		`{"prefixes":"x"}`:  "cannot unmarshal string",
		`{"prefixes":[{"ip_prefix":"3.80.0.0/12"}]}`:                                                                         "prefixes[0]: ip_prefix 3.80.0.0/12 has no region",
		`{"prefixes":[{"ip_prefix":"3.80.0.0","region":"us-east-1"}]}`:                                                       `prefixes[0]: ip_prefix: netip.ParsePrefix("3.80.0.0"): no '/'`,
		`{"prefixes":[{"ip_prefix":"3.80.0.0/33","region":"us-east-1"}]}`:                                                    "prefixes[0]: ip_prefix",
		`{"prefixes":[{"ip_prefix":"2600:1f18::/33","region":"us-east-1"}]}`:                                                 `ip_prefix "2600:1f18::/33" is not an IPv4 prefix`,
		`{"ipv6_prefixes":[{"ipv6_prefix":"3.80.0.0/12","region":"us-east-1"}]}`:                                             `ipv6_prefixes[0]: ipv6_prefix "3.80.0.0/12" is not an IPv6 prefix`,
		`{"prefixes":[{"ip_prefix":"3.80.0.0/12","region":"us east 1"}]}`:                                                    `region "us east 1"`,
		`{"prefixes":[{"ip_prefix":"3.80.0.0/12","region":"us-east-1"}]} trailing`:                                           "invalid character",
		`{"ipv6_prefixes":[{"ipv6_prefix":"2600:1f18::/33","region":"us-east-1"},{"ipv6_prefix":"x","region":"us-east-1"}]}`: "ipv6_prefixes[1]",
	}
}

func gcpBadInputs() map[string]string {
	return map[string]string{
		`{`:                 "unexpected end of JSON input",
		`{}`:                "no prefixes",
		`{"prefixes":[{}]}`: "prefixes[0]: neither ipv4Prefix nor ipv6Prefix",
		`{"prefixes":[{"ipv4Prefix":"34.1.208.0/20","ipv6Prefix":"2600:1900::/28","scope":"us-east1"}]}`: "both ipv4Prefix and ipv6Prefix",
		`{"prefixes":[{"ipv4Prefix":"34.1.208.0/20"}]}`:                                                  "has no region",
		`{"prefixes":[{"ipv4Prefix":"2600:1900::/28","scope":"us-east1"}]}`:                              "not an IPv4 prefix",
		`{"prefixes":[{"ipv6Prefix":"bad","scope":"us-east1"}]}`:                                         "prefixes[0]: ipv6Prefix",
		`{"prefixes":[{"ipv4Prefix":"34.1.208.0/20","scope":"us-east1\n"}]}`:                             "region",
	}
}

func TestParseAWSRangesErrors(t *testing.T) {
	for in, want := range awsBadInputs() {
		t.Run(in, func(t *testing.T) {
			_, err := geo.ParseAWSRanges(strings.NewReader(in))
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "AWS ip-ranges.json") {
				t.Errorf("error = %v, want one naming the file and containing %q", err, want)
			}
		})
	}
}

func TestParseGCPRangesErrors(t *testing.T) {
	for in, want := range gcpBadInputs() {
		t.Run(in, func(t *testing.T) {
			_, err := geo.ParseGCPRanges(strings.NewReader(in))
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(strings.ToLower(err.Error()), "cloud.json") {
				t.Errorf("error = %v, want one naming the file and containing %q", err, want)
			}
		})
	}
}

func TestParseRangesTooLarge(t *testing.T) {
	huge := io.MultiReader(strings.NewReader(`{"prefixes":[`), endless(' '))
	_, err := geo.ParseGCPRanges(huge)
	if err == nil || !strings.Contains(err.Error(), "larger than 64 MiB") {
		t.Errorf("error = %v, want the size bound", err)
	}
}

// endless is a reader that never ends.
type endless byte

func (e endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}
