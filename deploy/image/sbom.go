package main

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// SBOM returns an SPDX 2.3 JSON document listing what the image is made of: the Go modules
// compiled into its binaries (from the build information the go command embeds), the standard
// library, and the image itself. It is as reproducible as the image: the creation time is the
// image's, and the modules are sorted.
func SBOM(bins []Binary, created time.Time, version, imageRef string) ([]byte, error) {
	type module struct{ path, version string }
	mods := map[module]bool{}
	var mainPath, goVersion string
	for _, b := range bins {
		bi, err := buildinfo.Read(bytes.NewReader(b.Data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Platform.String(), err)
		}
		mainPath, goVersion = bi.Main.Path, bi.GoVersion
		for _, d := range bi.Deps {
			if d.Replace != nil {
				d = d.Replace
			}
			mods[module{d.Path, d.Version}] = true
		}
	}
	sorted := make([]module, 0, len(mods))
	for m := range mods {
		sorted = append(sorted, m)
	}
	slices.SortFunc(sorted, func(a, b module) int {
		return strings.Compare(a.path+"@"+a.version, b.path+"@"+b.version)
	})

	type ref struct {
		Category string `json:"referenceCategory"`
		Type     string `json:"referenceType"`
		Locator  string `json:"referenceLocator"`
	}
	type pkg struct {
		Name             string `json:"name"`
		ID               string `json:"SPDXID"`
		Version          string `json:"versionInfo,omitempty"`
		DownloadLocation string `json:"downloadLocation"`
		FilesAnalyzed    bool   `json:"filesAnalyzed"`
		ExternalRefs     []ref  `json:"externalRefs,omitempty"`
	}
	type rel struct {
		From string `json:"spdxElementId"`
		Type string `json:"relationshipType"`
		To   string `json:"relatedSpdxElement"`
	}
	purl := func(path, v string) []ref {
		return []ref{{"PACKAGE-MANAGER", "purl", "pkg:golang/" + path + "@" + v}}
	}
	repo, digest, _ := strings.Cut(imageRef, "@")
	pkgs := []pkg{
		{
			Name: "oci-proxy image", ID: "SPDXRef-Image", Version: version, DownloadLocation: "NOASSERTION",
			ExternalRefs: []ref{{"PACKAGE-MANAGER", "purl", "pkg:oci/oci-proxy@" + url.PathEscape(digest) + "?repository_url=" + url.QueryEscape(repo)}},
		},
		{Name: mainPath, ID: "SPDXRef-Main", Version: version, DownloadLocation: "NOASSERTION", ExternalRefs: purl(mainPath, "v"+version)},
		{Name: "stdlib", ID: "SPDXRef-Stdlib", Version: goVersion, DownloadLocation: "NOASSERTION", ExternalRefs: purl("stdlib", goVersion)},
	}
	rels := []rel{
		{"SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-Image"},
		{"SPDXRef-Image", "CONTAINS", "SPDXRef-Main"},
		{"SPDXRef-Main", "DEPENDS_ON", "SPDXRef-Stdlib"},
	}
	for i, m := range sorted {
		id := fmt.Sprintf("SPDXRef-Module-%d", i+1)
		pkgs = append(pkgs, pkg{Name: m.path, ID: id, Version: m.version, DownloadLocation: "NOASSERTION", ExternalRefs: purl(m.path, m.version)})
		rels = append(rels, rel{"SPDXRef-Main", "DEPENDS_ON", id})
	}
	doc := map[string]any{
		"spdxVersion":       "SPDX-2.3",
		"dataLicense":       "CC0-1.0",
		"SPDXID":            "SPDXRef-DOCUMENT",
		"name":              "oci-proxy-" + version,
		"documentNamespace": "https://github.com/happy-turtle/oci-proxy/spdx/" + version + "/" + strings.TrimPrefix(digest, "sha256:"),
		"creationInfo": map[string]any{
			"created":  created.UTC().Format(time.RFC3339),
			"creators": []string{"Tool: oci-proxy-release"},
		},
		"packages":      pkgs,
		"relationships": rels,
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
