package geo_test

import (
	"os"
	"strings"
	"testing"

	"github.com/happy-turtle/oci-proxy/geo"
)

func FuzzParseAWSRanges(f *testing.F) {
	seedFile(f, "../testdata/cloud/aws-ip-ranges.json")
	for in := range awsBadInputs() {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := geo.ParseAWSRanges(strings.NewReader(string(data)))
		checkRules(t, rules, err, "aws:")
	})
}

func FuzzParseGCPRanges(f *testing.F) {
	seedFile(f, "../testdata/cloud/gcp-cloud.json")
	for in := range gcpBadInputs() {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := geo.ParseGCPRanges(strings.NewReader(string(data)))
		checkRules(t, rules, err, "gcp:")
	})
}

func seedFile(f *testing.F, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
}

// checkRules holds a successful parse to what the network table expects: valid, masked prefixes,
// tags of the right cloud, no duplicates.
func checkRules(t *testing.T, rules []geo.NetworkRule, err error, tagPrefix string) {
	if err != nil {
		if rules != nil {
			t.Fatalf("rules %v with error %v", rules, err)
		}
		return
	}
	seen := map[geo.NetworkRule]bool{}
	for _, r := range rules {
		if !r.Prefix.IsValid() || r.Prefix != r.Prefix.Masked() {
			t.Fatalf("prefix %v is not valid and masked", r.Prefix)
		}
		if !strings.HasPrefix(r.Tag, tagPrefix) || len(r.Tag) == len(tagPrefix) {
			t.Fatalf("tag %q", r.Tag)
		}
		if seen[r] {
			t.Fatalf("duplicate rule %v", r)
		}
		seen[r] = true
	}
}
