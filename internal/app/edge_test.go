package app

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// edgeConfigs are mirror rows at the edges of what the file allows. Each is run through
// `validate` and through building the service; the two must agree on every row, with the same
// message when they refuse.
var edgeConfigs = []struct {
	name string
	row  string // one mirror's keys, indented under "mirrors:"
	ok   bool
	want string // in the error when !ok
}{
	{"bare address in networks", `{name: m, provider: http, base_url: "https://m.example/", networks: ["192.0.2.7"]}`, true, ""},
	{"bare IPv6 address in networks", `{name: m, provider: http, base_url: "https://m.example/", networks: ["2001:db8::7"]}`, true, ""},
	{"mapped IPv6 prefix", `{name: m, provider: http, base_url: "https://m.example/", networks: ["::ffff:10.0.0.0/104"]}`, true, ""},
	{"mapped IPv6 prefix wider than the mapped block", `{name: m, provider: http, base_url: "https://m.example/", networks: ["::ffff:10.0.0.0/80"]}`, false, "shorter than /96"},
	{"network with a zone", `{name: m, provider: http, base_url: "https://m.example/", networks: ["fe80::1%eth0/64"]}`, false, "networks"},
	{"zero weight", `{name: m, provider: http, base_url: "https://m.example/", weight: 0}`, true, ""},
	{"weight too big", `{name: m, provider: http, base_url: "https://m.example/", weight: 1000001}`, false, "weight must be between 0 and 1000000"},
	{"weight not a number", `{name: m, provider: http, base_url: "https://m.example/", weight: heavy}`, false, `weight: "heavy" is not a whole number`},
	{"latitude 90", `{name: m, provider: http, base_url: "https://m.example/", location: {lat: 90, lon: 180}}`, true, ""},
	{"latitude 91", `{name: m, provider: http, base_url: "https://m.example/", location: {lat: 91, lon: 0}}`, false, "location must have lat in [-90, 90]"},
	{"zero signing TTL means the default", `{name: m, provider: http, base_url: "https://m.example/", signing_ttl: 0}`, true, ""},
	{"signing TTL under a second", `{name: m, provider: http, base_url: "https://m.example/", signing_ttl: 500ms}`, false, "signing_ttl must be between 1s"},
	{"signing TTL without a unit", `{name: m, provider: http, base_url: "https://m.example/", signing_ttl: 15}`, false, "is not a duration"},
	{"absolute prefix", `{name: m, provider: http, base_url: "https://m.example/", prefix: /blobs/}`, false, "prefix must be a relative path"},
	{"dot segment in prefix", `{name: m, provider: http, base_url: "https://m.example/", prefix: a/../}`, false, "prefix must be a relative path"},
	{"unknown address family", `{name: m, provider: http, base_url: "https://m.example/", address_family: ipv5}`, false, "address_family must be ipv4 or ipv6"},
	{"address family in capitals", `{name: m, provider: http, base_url: "https://m.example/", address_family: IPv6}`, true, ""},
	{"unknown country code", `{name: m, provider: http, base_url: "https://m.example/", country: XX}`, false, `country "XX" is not an ISO 3166-1 alpha-2 code`},
	{"country in lower case", `{name: m, provider: http, base_url: "https://m.example/", country: de}`, true, ""},
	{"unknown code in exclude_countries", `{name: m, provider: http, base_url: "https://m.example/", exclude_countries: [ZZ]}`, false, "is not a valid code"},
	{"base URL without a trailing slash", `{name: m, provider: http, base_url: "https://m.example/blobs"}`, true, ""},
	{"base URL with a query", `{name: m, provider: http, base_url: "https://m.example/?x=1"}`, false, "base_url must be an http(s) URL"},
	{"s3 endpoint without a region", `{name: m, provider: s3, bucket: b, endpoint: "http://127.0.0.3:9000"}`, true, ""},
	{"s3 without region or endpoint", `{name: m, provider: s3, bucket: b}`, false, "region is required"},
	{"s3 endpoint without a scheme", `{name: m, provider: s3, bucket: b, region: r, endpoint: "127.0.0.3:9000"}`, false, "endpoint must be an http(s) URL"},
	{"public gcs bucket", `{name: m, provider: gcs, bucket: b, public: true}`, true, ""},
	{"gcs without a bucket", `{name: m, provider: gcs}`, false, "bucket is required"},
	{"http mirror named upstream", `{name: upstream, provider: http, base_url: "https://m.example/"}`, false, "name must be lowercase"},
	{"missing credentials file", `{name: m, provider: s3, bucket: b, region: r, credentials_file: nope}`, false, "credentials file"},
}

func TestEdgeConfigsAgree(t *testing.T) {
	testenv.IsolateAWS(t)
	testenv.IsolateGCS(t)
	for _, tc := range edgeConfigs {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			data := "upstream: https://registry.example/v2/acme/\nmirrors:\n  - " + tc.row + "\n"
			if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out bytes.Buffer
			verr := Validate(ctx, path, &out)
			berr := buildService(ctx, path)
			if (verr == nil) != (berr == nil) {
				t.Fatalf("validate and serve disagree:\nvalidate: %v\nserve:    %v", verr, berr)
			}
			if verr != nil && verr.Error() != berr.Error() {
				t.Errorf("different messages:\nvalidate: %v\nserve:    %v", verr, berr)
			}
			if tc.ok != (verr == nil) {
				t.Fatalf("accepted = %v, want %v (error: %v)", verr == nil, tc.ok, verr)
			}
			if !tc.ok {
				if !strings.Contains(verr.Error(), tc.want) || !strings.HasPrefix(verr.Error(), path+":") {
					t.Errorf("error %q: want %q, after the file name and line", verr, tc.want)
				}
				return
			}
			if !strings.Contains(out.String(), ": ok (") {
				t.Errorf("validate printed %q", out.String())
			}
		})
	}
}

// buildService does what `serve` does before it opens a port.
func buildService(ctx context.Context, path string) error {
	cfg, err := LoadServeConfig(path, "")
	if err != nil {
		return err
	}
	svc, err := New(ctx, cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	return svc.Close()
}

// The values a row resolves to reach the mirror as the row says.
func TestEdgeValuesReachTheMirror(t *testing.T) {
	data := `upstream: https://registry.example/v2/
mirrors:
  - {name: m, provider: http, base_url: "https://m.example/blobs", networks: ["192.0.2.7", "::ffff:10.0.0.0/104"], country: de, address_family: IPv6}
`
	cfg, err := config.Parse("x.yaml", []byte(data), config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Mirrors[0]
	if got := m.BaseURL.String(); got != "https://m.example/blobs/" {
		t.Errorf("base URL = %s", got)
	}
	s := mirrorSpec(m)
	if got := fmt.Sprint(s.Networks); got != "[192.0.2.7/32 10.0.0.0/8]" {
		t.Errorf("networks = %s", got)
	}
	if s.Country != "DE" || s.Continent != "EU" || s.Family.String() != "ipv6" || s.Weight != config.DefaultWeight || s.SigningTTL != config.DefaultSigningTTL || s.Disabled {
		t.Errorf("spec = %+v", s)
	}
	rules, err := networkRules(cfg)
	if err != nil || len(rules) != 2 {
		t.Fatalf("network rules = %v, %v", rules, err)
	}
}

// FuzzParseBuilds: whatever the configuration accepts builds, as long as it names no file (a
// database, a range file, a key) that the fuzzer cannot make exist.
func FuzzParseBuilds(f *testing.F) {
	testenv.IsolateAWS(f)
	testenv.IsolateGCS(f)
	for _, tc := range edgeConfigs {
		f.Add([]byte("upstream: https://registry.example/v2/acme/\nmirrors:\n  - " + tc.row + "\n"))
	}
	for _, p := range []string{"../../config/testdata/bad.yaml", "../../config.yaml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse("fuzz.yaml", data, config.Overrides{})
		if err != nil || namesFiles(cfg) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		parts, err := BuildParts(ctx, cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("accepted but not built: %v\n%s", err, data)
		}
		parts.Close()
		if _, err := UpstreamTable(cfg); err != nil {
			t.Fatalf("accepted but no upstream table: %v\n%s", err, data)
		}
	})
}

func namesFiles(cfg *config.Config) bool {
	if cfg.GeoIP.Database != "" || cfg.GeoIP.ASNDatabase != "" || len(cfg.CloudRanges) > 0 {
		return true
	}
	for _, m := range cfg.Mirrors {
		if m.CredentialsFile != "" || m.Profile != "" || (m.Provider == config.GCS && !m.Public) {
			return true
		}
	}
	return false
}
