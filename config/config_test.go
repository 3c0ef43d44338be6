package config

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestBadFileGolden checks that every problem of a broken file is reported at once, each with the
// file and line, in a stable text kept in testdata/bad.golden.
func TestBadFileGolden(t *testing.T) {
	// Unknown keys and semantic problems are reported together; the file without its unknown keys
	// shows that they do not hide anything else.
	for _, tc := range []struct{ name, file string }{
		{"bad", "testdata/bad.yaml"},
		{"semantic", "testdata/semantic.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := os.ReadFile(tc.file)
			if tc.name == "semantic" {
				// The same file without its unknown keys: the semantic problems show.
				data, err = os.ReadFile("testdata/bad.yaml")
				data = []byte(strings.NewReplacer("typo_key: true\n", "", "    colour: blue\n", "").Replace(string(data)))
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse("config.yaml", data, Overrides{})
			if err == nil {
				t.Fatal("Parse accepted a broken file")
			}
			got := err.Error() + "\n"
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./config -update)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
				if !strings.HasPrefix(line, "config.yaml:") {
					t.Errorf("error without file:line: %q", line)
				}
			}
		})
	}
}

func TestParseGood(t *testing.T) {
	c, err := Load("../config.yaml", Overrides{})
	if err != nil {
		t.Fatalf("the repository's config.yaml: %v", err)
	}
	if c.Upstream == nil || c.Listen == "" {
		t.Fatalf("config.yaml loaded without upstream or listen: %+v", c)
	}
	data := `
upstream: http://127.0.0.2:5000/v2
trusted_proxies: ["10.0.0.0/8", "::ffff:192.168.0.0/112", "2001:db8::1"]
mirrors:
  - name: eu-west
    provider: gcs
    bucket: b
    country: de
    location: {lat: 50.1, lon: 8.7}
    only_continents: [eu]
    sync: demand
  - name: cdn
    provider: http
    base_url: https://cdn.example.com/blobs/
    enabled: false
    weight: 0
`
	c, err = Parse("x.yaml", []byte(data), Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Upstream.String(); got != "http://127.0.0.2:5000/v2/" {
		t.Errorf("upstream = %q", got)
	}
	wantPfx := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("2001:db8::1/128")}
	if diff := cmp.Diff(wantPfx, c.TrustedProxies, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("trusted prefixes (-want +got):\n%s", diff)
	}
	m := c.Mirrors[0]
	if m.Country != "DE" || m.Continent != "EU" || m.OnlyContinents[0] != "EU" || m.Weight != DefaultWeight || !m.Enabled || m.Line != 5 {
		t.Errorf("mirror 0 = %+v", m)
	}
	if m.Sync != SyncDemand || c.Mirrors[1].Sync != SyncAll || m.Sync.String() != "demand" {
		t.Errorf("sync modes = %v, %v; want demand, all", m.Sync, c.Mirrors[1].Sync)
	}
	if c.Mirrors[1].Enabled || c.Mirrors[1].Weight != 0 {
		t.Errorf("mirror 1: enabled/weight not kept: %+v", c.Mirrors[1])
	}
	if c.Signing.TTL != 15*time.Minute || c.Presence.MissTTL != DefaultMissTTL || c.Listen != DefaultListen {
		t.Errorf("defaults not applied: %+v %+v %q", c.Signing, c.Presence, c.Listen)
	}
}

func TestOverrides(t *testing.T) {
	c, err := Parse("x.yaml", []byte("upstream: https://a.example/v2/x/\nlisten: ':1'\n"), Overrides{Upstream: "https://b.example/v2/y", Listen: "127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream.String() != "https://b.example/v2/y/" || c.Listen != "127.0.0.1:9" {
		t.Errorf("overrides not applied: %s %s", c.Upstream, c.Listen)
	}
	c, err = FromEnv(Overrides{Upstream: "https://b.example/v2/"})
	if err != nil || c.Upstream.String() != "https://b.example/v2/" {
		t.Errorf("FromEnv = %v, %v", c, err)
	}
	if _, err := FromEnv(Overrides{}); err == nil || !strings.Contains(err.Error(), "UpstreamRegistry") {
		t.Errorf("FromEnv without upstream: %v", err)
	}
}

func TestParseUpstream(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "https://us-central1-docker.pkg.dev/v2/oci-proxy/oci-proxy-images/", want: "https://us-central1-docker.pkg.dev/v2/oci-proxy/oci-proxy-images/"},
		{in: "https://us-central1-docker.pkg.dev/v2/oci-proxy/oci-proxy-images", want: "https://us-central1-docker.pkg.dev/v2/oci-proxy/oci-proxy-images/"},
		{in: "http://127.0.0.2:5000/v2/", want: "http://127.0.0.2:5000/v2/"},
		{in: "http://[::1]:5000/v2", want: "http://[::1]:5000/v2/"},
		{in: "https://ghcr.io/acme/", err: "/v2/"},
		{in: "https://ghcr.io/v2/Acme/", err: "repository prefix"},
		{in: "ftp://ghcr.io/v2/", err: "https://"},
		{in: "https:///v2/", err: "no host"},
		{in: "https://u:p@ghcr.io/v2/", err: "credentials"},
		{in: "https://ghcr.io/v2/?x=1", err: "query"},
		{in: "https://ghcr.io/v2/#f", err: "fragment"},
		{in: "://", err: "not a URL"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := parseUpstream(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("= %v, %v; want %s", u, err, tc.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml"), Overrides{}); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
	for name, data := range map[string]string{
		"syntax.yaml": "upstream: [unclosed\n",
		"two.yaml":    "upstream: https://a.example/v2/\n---\nlisten: ':1'\n",
		"type.yaml":   "upstream: https://a.example/v2/\nmirrors: {name: x}\n",
		// Found by FuzzParse: a multi-line scalar where a mapping belongs gave a message over two
		// lines, the second without the file name.
		"scalar.yaml": "0\n\n0",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, Overrides{})
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, p+":") {
				t.Errorf("%s: error line %q does not start with the file name", name, line)
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/bad.yaml", "../config.yaml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("upstream: https://a.example/v2/\nmirrors:\n  - name: a\n    provider: http\n    base_url: https://x/\n"))
	f.Add([]byte("upstream: https://a.example/v2/\nunlocated: upstream\npresence: {max_checks_per_second: 0}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data, Overrides{})
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml") {
					t.Fatalf("error line without the file name: %q", line)
				}
			}
			return
		}
		if c.Upstream == nil || !strings.HasSuffix(c.Upstream.Path, "/") {
			t.Fatalf("accepted without a normalised upstream: %+v", c.Upstream)
		}
		if b := c.Presence.MaxChecksPerSecond; b < 0 || b > MaxChecksPerSecond || c.Unlocated > UnlocatedUpstream {
			t.Fatalf("accepted a budget of %d, unlocated %d", b, c.Unlocated)
		}
	})
}

func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	data := "upstream: https://a.example/v2/\ngeoip: {database: db/city.mmdb, asn_database: /abs/asn.mmdb}\ncloud_ranges: [{cloud: aws, file: aws.json}]\n"
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if c.GeoIP.Database != filepath.Join(dir, "db/city.mmdb") || c.GeoIP.ASNDatabase != "/abs/asn.mmdb" || c.CloudRanges[0].File != filepath.Join(dir, "aws.json") {
		t.Errorf("paths not resolved against the file's directory: %+v %+v", c.GeoIP, c.CloudRanges)
	}
}

func TestRouteAuth(t *testing.T) {
	base := "upstream: https://a.example/v2/\nroutes:\n  - prefix: tools/\n    upstream: https://ghcr.io/v2/acme/\n"
	if _, err := Parse("x.yaml", []byte(base+"    auth: {username: bot, password_file: /run/secrets/ghcr}\n"), Overrides{}); err != nil {
		t.Errorf("route with auth: %v", err)
	}
	_, err := Parse("x.yaml", []byte(base+"    auth: {username: bot}\n"), Overrides{})
	if err == nil || !strings.Contains(err.Error(), "x.yaml:5: routes: auth needs both username and password_file") {
		t.Errorf("route with half an auth: %v", err)
	}
}

func TestMirrorASNs(t *testing.T) {
	base := "upstream: https://a.example/v2/\nmirrors:\n  - {name: isp, provider: http, base_url: \"https://isp.example/\", asns: [3320, 0]}\n"
	_, err := Parse("x.yaml", []byte(base), Overrides{})
	for _, want := range []string{`x.yaml:3: mirror "isp": asns: 0 is not an AS number`, `mirror "isp": asns needs geoip.asn_database`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	ok := "upstream: https://a.example/v2/\ngeoip: {asn_database: asn.mmdb}\nmirrors:\n  - {name: isp, provider: http, base_url: \"https://isp.example/\", asns: [3320]}\n"
	c, err := Parse("x.yaml", []byte(ok), Overrides{})
	if err != nil || len(c.Mirrors[0].ASNs) != 1 || c.Mirrors[0].ASNs[0] != 3320 {
		t.Errorf("Parse = %+v, %v", c, err)
	}
}

func TestPresenceBudget(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       int
		err        string
	}{
		{"left out", "", DefaultMaxChecksPerSecond, ""},
		{"a budget", "presence: {max_checks_per_second: 50}\n", 50, ""},
		{"no limit", "presence: {max_checks_per_second: 0}\n", 0, ""},
		{"the largest", "presence: {max_checks_per_second: 1000000}\n", MaxChecksPerSecond, ""},
		{"negative", "presence:\n  max_checks_per_second: -1\n", 0,
			"x.yaml:3: presence.max_checks_per_second must be between 0 (no limit) and 1000000, not -1"},
		{"too large", "presence: {max_checks_per_second: 1000001}\n", 0, "x.yaml:2: presence.max_checks_per_second must be between"},
		{"not a number", "presence: {max_checks_per_second: lots}\n", 0, `x.yaml:2: presence.max_checks_per_second: "lots" is not a whole number`},
		{"a fraction", "presence: {max_checks_per_second: 2.5}\n", 0, `x.yaml:2: presence.max_checks_per_second: "2.5" is not a whole number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("x.yaml", []byte("upstream: https://a.example/v2/\n"+tc.yaml), Overrides{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Presence.MaxChecksPerSecond != tc.want {
				t.Errorf("max_checks_per_second = %d, want %d", c.Presence.MaxChecksPerSecond, tc.want)
			}
		})
	}
}

func TestUnlocated(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want Unlocated
		err  string
	}{
		{"", UnlocatedMirrors, ""},
		{"unlocated: mirrors\n", UnlocatedMirrors, ""},
		{"unlocated: upstream\n", UnlocatedUpstream, ""},
		{"unlocated: Upstream\n", UnlocatedUpstream, ""},
		{"unlocated: nearest\n", 0, `x.yaml:2: unlocated must be mirrors or upstream, not "nearest"`},
		{"unlocated: [upstream]\n", 0, "x.yaml:2: unlocated"},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			c, err := Parse("x.yaml", []byte("upstream: https://a.example/v2/\n"+tc.yaml), Overrides{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Unlocated != tc.want {
				t.Errorf("unlocated = %v, want %v", c.Unlocated, tc.want)
			}
		})
	}
}
