package testenv

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	digestLike  = regexp.MustCompile(`[0-9a-f]{32,}`)
	addressLike = regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$|:.*:`)
	labelValue  = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)
)

// LooksLikeDigestOrAddress reports whether a label value looks like a digest (32 hex digits or
// more) or an IPv4 or IPv6 address.
func LooksLikeDigestOrAddress(v string) bool {
	return digestLike.MatchString(v) || addressLike.MatchString(v)
}

// CheckMetricLabels fails t on an oci_proxy series of a /metrics text whose label value looks
// like a digest or an address, on a repository label outside repos, and on any of the
// forbidden strings anywhere in a non-comment line.
func CheckMetricLabels(t testing.TB, text string, repos, forbidden []string) {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		for _, f := range forbidden {
			if strings.Contains(line, f) {
				t.Errorf("metrics line holds %q: %s", f, line)
			}
		}
		if !strings.HasPrefix(line, "oci_proxy_") {
			continue
		}
		for _, m := range labelValue.FindAllStringSubmatch(line, -1) {
			name, val := m[1], m[2]
			if name == "version" || name == "commit" || name == "goversion" {
				continue
			}
			if LooksLikeDigestOrAddress(val) {
				t.Errorf("label %s=%q looks like a digest or an address: %s", name, val, line)
			}
			if name == "repository" && !slices.Contains(repos, val) {
				t.Errorf("repository label %q is not configured: %s", val, line)
			}
		}
	}
}
