package app

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/geo"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
)

// TestSelectorOptions checks the translation of presence.max_checks_per_second and unlocated:
// the file's 0 (no budget) is not the option's 0 (the default).
func TestSelectorOptions(t *testing.T) {
	for _, tc := range []struct {
		yaml       string
		wantBudget int
		wantUnloc  mirrors.Unlocated
	}{
		{"", config.DefaultMaxChecksPerSecond, mirrors.UnlocatedMirrors},
		{"presence: {max_checks_per_second: 50}\n", 50, mirrors.UnlocatedMirrors},
		{"presence: {max_checks_per_second: 0}\n", -1, mirrors.UnlocatedMirrors},
		{"unlocated: upstream\n", config.DefaultMaxChecksPerSecond, mirrors.UnlocatedUpstream},
		{"unlocated: mirrors\n", config.DefaultMaxChecksPerSecond, mirrors.UnlocatedMirrors},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			cfg, err := config.Parse("x.yaml", []byte("upstream: https://registry.example/v2/\n"+tc.yaml), config.Overrides{})
			if err != nil {
				t.Fatal(err)
			}
			o := selectorOptions(cfg, nil)
			if got := []any{o.MaxChecksPerSecond, o.Unlocated}; !cmp.Equal(got, []any{tc.wantBudget, tc.wantUnloc}) {
				t.Errorf("budget, unlocated = %v, want %v, %v", got, tc.wantBudget, tc.wantUnloc)
			}
		})
	}
}

// TestMirrorSpecChecksCredentials: the mirrors the proxy reaches with credentials of its own are
// probed for them.
func TestMirrorSpecChecksCredentials(t *testing.T) {
	for _, tc := range []struct {
		row  string
		want bool
	}{
		{"{name: m, provider: s3, bucket: b, region: us-east-1}", true},
		{"{name: m, provider: gcs, bucket: b}", true},
		{"{name: m, provider: gcs, bucket: b, public: true}", false},
		{"{name: m, provider: gcs, bucket: b, public: true, credentials_file: /run/sa.json}", true},
		{"{name: m, provider: http, base_url: \"https://cdn.example/\"}", false},
	} {
		t.Run(tc.row, func(t *testing.T) {
			cfg, err := config.Parse("x.yaml", []byte("upstream: https://registry.example/v2/\nmirrors:\n  - "+tc.row+"\n"), config.Overrides{})
			if err != nil {
				t.Fatal(err)
			}
			if got := mirrorSpec(cfg.Mirrors[0]).CheckCredentials; got != tc.want {
				t.Errorf("CheckCredentials = %v, want %v", got, tc.want)
			}
		})
	}
}

// refusingBackend answers every Stat with a 403, as S3 does to revoked credentials.
type refusingBackend struct{ signingBackend }

func (refusingBackend) Stat(_ context.Context, key string) (mirrors.Object, error) {
	return mirrors.Object{}, fmt.Errorf("stat %s: %w", key, mirrors.ErrDenied)
}

// TestMirrorMetrics checks the series that follow a mirror's credentials and its skipped checks.
func TestMirrorMetrics(t *testing.T) {
	spec := func(name string) mirrors.Spec {
		return mirrors.Spec{Name: name, Provider: "s3", Prefix: "blobs/", Weight: 100, SigningTTL: time.Minute, CheckCredentials: true}
	}
	cdn := mirrors.Spec{Name: "cdn", Provider: "http", Prefix: "blobs/", Weight: 1, SigningTTL: time.Minute}
	sel := mirrors.NewSelector([]*mirrors.Mirror{
		mirrors.NewMirror(spec("revoked"), refusingBackend{}),
		mirrors.NewMirror(spec("fine"), signingBackend{}),
		mirrors.NewMirror(cdn, refusingBackend{}),
	}, mirrors.Options{MaxChecksPerSecond: 1})
	m := NewMetrics(BuildInfo{})
	m.SetSelector(sel)
	loc := geo.Location{}
	for i := range 3 {
		d, err := oci.ParseDigest(fmt.Sprintf("sha256:%064x", i+1))
		if err != nil {
			t.Fatal(err)
		}
		sel.Explain(t.Context(), mirrors.Query{Loc: loc, Digest: d})
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	var got []string
	for _, line := range strings.Split(string(body), "\n") {
		for _, p := range []string{"oci_proxy_mirror_healthy{", "oci_proxy_mirror_credentials_ok{", "oci_proxy_presence_checks_skipped_total{"} {
			if strings.HasPrefix(line, p) {
				got = append(got, line)
			}
		}
	}
	want := []string{
		`oci_proxy_mirror_credentials_ok{mirror="fine"} 1`,
		`oci_proxy_mirror_credentials_ok{mirror="revoked"} 0`,
		`oci_proxy_mirror_healthy{mirror="cdn"} 1`,
		`oci_proxy_mirror_healthy{mirror="fine"} 1`,
		`oci_proxy_mirror_healthy{mirror="revoked"} 0`,
		// Three blobs, one check a second: two skipped on each mirror still asked.
		`oci_proxy_presence_checks_skipped_total{mirror="cdn",reason="budget"} 2`,
		`oci_proxy_presence_checks_skipped_total{mirror="cdn",reason="paced"} 0`,
		`oci_proxy_presence_checks_skipped_total{mirror="fine",reason="budget"} 2`,
		`oci_proxy_presence_checks_skipped_total{mirror="fine",reason="paced"} 0`,
		`oci_proxy_presence_checks_skipped_total{mirror="revoked",reason="budget"} 0`,
		`oci_proxy_presence_checks_skipped_total{mirror="revoked",reason="paced"} 0`,
	}
	if diff := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}
}
