package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed shape. The user is nobody, as in the Dockerfile: the service needs no
// privileges and writes nothing, and a numeric user lets Kubernetes check runAsNonRoot.
const (
	binaryPath  = "oci-proxy"
	caCertsPath = "etc/ssl/certs/ca-certificates.crt"
	imageUser   = "65534:65534"
)

var (
	entrypoint = []string{"/" + binaryPath}
	defaultCmd = []string{"serve", "--config", "/etc/oci-proxy/config.yaml"}
)

// Spec is what every platform's image shares.
type Spec struct {
	// Created is the time of every file, of the configuration and of its history: the commit's
	// time, so that a rebuild of the same commit is identical.
	Created time.Time
	CACerts []byte
	// Labels go into each image's configuration and, as annotations, onto its manifest and the
	// index.
	Labels map[string]string
}

// Binary is one platform's static oci-proxy binary.
type Binary struct {
	Platform v1.Platform
	Data     []byte
}

// CheckBinary makes sure data is a Go binary for plat and built without cgo: the image has no C
// library, so a binary that needs one would not start.
func CheckBinary(data []byte, plat v1.Platform) error {
	bi, err := buildinfo.Read(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not a Go binary: %w", err)
	}
	got := map[string]string{}
	for _, s := range bi.Settings {
		got[s.Key] = s.Value
	}
	if got["GOOS"] != plat.OS || got["GOARCH"] != plat.Architecture {
		return fmt.Errorf("built for %s/%s, not for %s", got["GOOS"], got["GOARCH"], plat.String())
	}
	if got["CGO_ENABLED"] != "0" {
		return fmt.Errorf("built with cgo (CGO_ENABLED=%q); the image has no C library", got["CGO_ENABLED"])
	}
	return nil
}

// Index builds the multi-platform index of the binaries, ordered by platform.
func Index(s Spec, bins []Binary) (v1.ImageIndex, error) {
	bins = slices.Clone(bins)
	slices.SortFunc(bins, func(a, b Binary) int {
		switch as, bs := a.Platform.String(), b.Platform.String(); {
		case as < bs:
			return -1
		case as > bs:
			return 1
		}
		return 0
	})
	var adds []mutate.IndexAddendum
	for i, b := range bins {
		if i > 0 && bins[i-1].Platform.String() == b.Platform.String() {
			return nil, fmt.Errorf("two binaries for %s", b.Platform.String())
		}
		img, err := Image(s, b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Platform.String(), err)
		}
		plat := b.Platform
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plat}})
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.AppendManifests(idx, adds...)
	return mutate.Annotations(idx, s.Labels).(v1.ImageIndex), nil
}

// Image builds one platform's image: a single layer holding the binary and the CA
// certificates, FROM scratch.
func Image(s Spec, b Binary) (v1.Image, error) {
	gz, err := layerBytes(s, b.Data)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: s.Created.UTC()}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   created,
			CreatedBy: "scripts/release.sh",
			Comment:   "the oci-proxy binary and CA certificates",
		},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = created
	cfg.OS, cfg.Architecture, cfg.Variant, cfg.OSVersion = b.Platform.OS, b.Platform.Architecture, b.Platform.Variant, b.Platform.OSVersion
	cfg.Config = v1.Config{
		User:         imageUser,
		Entrypoint:   entrypoint,
		Cmd:          defaultCmd,
		WorkingDir:   "/",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Labels:       maps.Clone(s.Labels),
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, s.Labels).(v1.Image), nil
}

// layerBytes is the gzipped tar of the image's files. Everything that could differ between two
// builds of one commit is fixed: order, times, owners, modes, and the gzip header (no name, no
// time). Compressing once here also keeps the push from compressing again. The default level:
// the best one makes the layer under 1% smaller and takes three times as long.
func layerBytes(s Spec, binary []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	mtime := s.Created.UTC().Truncate(time.Second)
	entries := []struct {
		name string
		mode int64
		data []byte
		dir  bool
	}{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: caCertsPath, mode: 0o644, data: s.CACerts},
		{name: binaryPath, mode: 0o755, data: binary},
	}
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
