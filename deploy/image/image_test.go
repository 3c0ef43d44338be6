package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}
)

// tinyBinary builds a small static Go program for plat, once per platform.
func tinyBinary(t *testing.T, plat v1.Platform) []byte {
	t.Helper()
	binaries.once.Do(func() {
		binaries.data = map[string][]byte{}
		dir, err := os.MkdirTemp("", "image-test")
		if err != nil {
			binaries.err = err
			return
		}
		defer os.RemoveAll(dir)
		for name, data := range map[string]string{
			"go.mod":  "module example.com/tiny\n\ngo 1.26\n",
			"main.go": "package main\n\nfunc main() { println(\"tiny\") }\n",
		} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				binaries.err = err
				return
			}
		}
		for _, p := range []v1.Platform{amd64, arm64} {
			out := filepath.Join(dir, p.Architecture)
			cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOFLAGS=-buildvcs=false")
			if b, err := cmd.CombinedOutput(); err != nil {
				binaries.err = errors.New(string(b))
				return
			}
			if binaries.data[p.String()], err = os.ReadFile(out); err != nil {
				binaries.err = err
				return
			}
		}
	})
	if binaries.err != nil {
		t.Fatalf("build a test binary: %v", binaries.err)
	}
	return binaries.data[plat.String()]
}

var binaries struct {
	once sync.Once
	data map[string][]byte
	err  error
}

func testSpec(created time.Time) Spec {
	return Spec{
		Created: created,
		CACerts: []byte("-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"),
		Labels: map[string]string{
			"org.opencontainers.image.version":  "1.2.3",
			"org.opencontainers.image.revision": "abc",
		},
	}
}

func indexDigest(t *testing.T, s Spec, bins []Binary) v1.Hash {
	t.Helper()
	idx, err := Index(s, bins)
	if err != nil {
		t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestIndexIsReproducible(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bins := []Binary{{arm64, tinyBinary(t, arm64)}, {amd64, tinyBinary(t, amd64)}}
	want := indexDigest(t, testSpec(created), bins)
	if got := indexDigest(t, testSpec(created), bins); got != want {
		t.Errorf("two builds of the same inputs: %s and %s", want, got)
	}
	if got := indexDigest(t, testSpec(created), []Binary{bins[1], bins[0]}); got != want {
		t.Errorf("the order of --binary flags changed the digest: %s and %s", want, got)
	}
	if got := indexDigest(t, testSpec(created.Add(time.Second)), bins); got == want {
		t.Errorf("another creation time gave the same digest %s", got)
	}
	s := testSpec(created)
	s.Labels["org.opencontainers.image.revision"] = "def"
	if got := indexDigest(t, s, bins); got == want {
		t.Errorf("another revision label gave the same digest %s", got)
	}
}

func TestIndexRefusesTwoBinariesForOnePlatform(t *testing.T) {
	b := Binary{amd64, tinyBinary(t, amd64)}
	if _, err := Index(testSpec(time.Unix(0, 0)), []Binary{b, b}); err == nil {
		t.Error("Index accepted two binaries for linux/amd64")
	}
}

func TestImage(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := testSpec(created)
	bin := tinyBinary(t, arm64)
	img, err := Image(s, Binary{arm64, bin})
	if err != nil {
		t.Fatal(err)
	}

	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("manifest %s, config %s, layers %v: want OCI types and one layer", m.MediaType, m.Config.MediaType, m.Layers)
	}
	if diff := cmp.Diff(s.Labels, m.Annotations); diff != "" {
		t.Errorf("manifest annotations (-labels +annotations):\n%s", diff)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	want := v1.Config{
		User:         "65534:65534",
		Entrypoint:   []string{"/oci-proxy"},
		Cmd:          []string{"serve", "--config", "/etc/oci-proxy/config.yaml"},
		WorkingDir:   "/",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Labels:       s.Labels,
	}
	if diff := cmp.Diff(want, cfg.Config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if cfg.OS != "linux" || cfg.Architecture != "arm64" || !cfg.Created.Equal(created) {
		t.Errorf("config for %s/%s created %s, want linux/arm64 created %s", cfg.OS, cfg.Architecture, cfg.Created, created)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type entry struct {
		Name     string
		Mode     int64
		UID, GID int
		Size     int64
		ModTime  time.Time
	}
	var got []entry
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, entry{h.Name, h.Mode, h.Uid, h.Gid, h.Size, h.ModTime.UTC()})
	}
	wantFiles := []entry{
		{"etc/", 0o755, 0, 0, 0, created},
		{"etc/ssl/", 0o755, 0, 0, 0, created},
		{"etc/ssl/certs/", 0o755, 0, 0, 0, created},
		{"etc/ssl/certs/ca-certificates.crt", 0o644, 0, 0, int64(len(s.CACerts)), created},
		{"oci-proxy", 0o755, 0, 0, int64(len(bin)), created},
	}
	if diff := cmp.Diff(wantFiles, got); diff != "" {
		t.Errorf("layer files (-want +got):\n%s", diff)
	}
}

func TestCheckBinary(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		plat v1.Platform
		err  string
	}{
		{"amd64", tinyBinary(t, amd64), amd64, ""},
		{"arm64", tinyBinary(t, arm64), arm64, ""},
		{"wrong platform", tinyBinary(t, amd64), arm64, "built for linux/amd64, not for linux/arm64"},
		{"not Go", []byte("#!/bin/sh\necho hi\n"), amd64, "not a Go binary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckBinary(tc.data, tc.plat)
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("CheckBinary: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("CheckBinary: %v, want an error containing %q", err, tc.err)
			}
		})
	}
}

func TestCreationTime(t *testing.T) {
	for _, tc := range []struct {
		flag, epoch string
		want        time.Time
		ok          bool
	}{
		{"2026-01-02T03:04:05Z", "", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), true},
		{"2026-01-02T04:04:05+01:00", "1", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), true},
		{"", "1767323045", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), true},
		{"", "", time.Time{}, false},
		{"", "yesterday", time.Time{}, false},
		{"", "-5", time.Time{}, false},
		{"2026-01-02", "", time.Time{}, false},
	} {
		got, err := creationTime(tc.flag, tc.epoch)
		if (err == nil) != tc.ok || !got.Equal(tc.want) {
			t.Errorf("creationTime(%q, %q) = %v, %v; want %v (ok: %v)", tc.flag, tc.epoch, got, err, tc.want, tc.ok)
		}
	}
}

func TestSBOM(t *testing.T) {
	bins := []Binary{{amd64, tinyBinary(t, amd64)}, {arm64, tinyBinary(t, arm64)}}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	doc, err := SBOM(bins, created, "1.2.3", "registry.example/oci-proxy@sha256:0123")
	if err != nil {
		t.Fatal(err)
	}
	again, err := SBOM(bins, created, "1.2.3", "registry.example/oci-proxy@sha256:0123")
	if err != nil {
		t.Fatal(err)
	}
	if string(doc) != string(again) {
		t.Error("two SBOMs of the same binaries differ")
	}
	var parsed struct {
		SPDXVersion  string `json:"spdxVersion"`
		CreationInfo struct {
			Created string `json:"created"`
		} `json:"creationInfo"`
		Packages []struct {
			Name string `json:"name"`
			ID   string `json:"SPDXID"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(doc, &parsed); err != nil {
		t.Fatalf("SBOM is not JSON: %v\n%s", err, doc)
	}
	if parsed.SPDXVersion != "SPDX-2.3" || parsed.CreationInfo.Created != "2026-01-02T03:04:05Z" {
		t.Errorf("SBOM %s created %s, want SPDX-2.3 created at the image's time", parsed.SPDXVersion, parsed.CreationInfo.Created)
	}
	var names []string
	for _, p := range parsed.Packages {
		names = append(names, p.Name)
	}
	if diff := cmp.Diff([]string{"oci-proxy image", "example.com/tiny", "stdlib"}, names); diff != "" {
		t.Errorf("SBOM packages of a program without dependencies (-want +got):\n%s", diff)
	}
}
