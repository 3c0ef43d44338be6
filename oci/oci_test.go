package oci_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/happy-turtle/oci-proxy/oci"
)

const hex64 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// Good and bad inputs in the style of go-containerregistry's pkg/name tests. A regression found by
// a fuzzer or a report gets a line here with a note.
var (
	goodNames = []string{
		"a", "app", "acme/app", "a/b/c/d", "a.b", "a_b", "a__b", "a-b", "a---b", "0", "9x",
		"manifests", "blobs/uploads/x", // path words are names too; the router reads from the right
		strings.Repeat("a", oci.MaxNameLength),
	}
	badNames = []string{
		"", "A", "App", "a/", "/a", "a//b", "a..b", "a._b", "a___b", "-a", "a-", "_a", "a_", ".a", "a.",
		"a b", "a:b", "a@b", "a/B", "ä", "a%2fb", "a\x00b",
		strings.Repeat("a", oci.MaxNameLength+1),
	}
	goodTags = []string{
		"latest", "1.0", "v1.2.3-rc_1", "_x", "X", "0", "a.b-c_d", strings.Repeat("t", 128),
	}
	badTags = []string{
		"", ".x", "-x", "a:b", "a/b", "a@b", "a b", "ä", "a+b", strings.Repeat("t", 129),
	}
	goodDigests = []string{
		"sha256:" + hex64,
		"sha512:" + strings.Repeat("0123456789abcdef", 8),
	}
	badDigests = []string{
		"sha256:", ":" + hex64, "sha256:" + strings.ToUpper(hex64), "sha256:" + hex64[:63],
		"sha256:" + hex64 + "0", "sha384:" + hex64, "blake3:" + hex64, "SHA256:" + hex64,
		"sha256:" + hex64[:63] + "g", "sha512:" + hex64,
	}
)

func TestValidateName(t *testing.T) {
	for _, s := range goodNames {
		if err := oci.ValidateName(s); err != nil {
			t.Errorf("ValidateName(%q) = %v", s, err)
		}
	}
	for _, s := range badNames {
		if err := oci.ValidateName(s); !errors.Is(err, oci.ErrName) {
			t.Errorf("ValidateName(%q) = %v, want ErrName", s, err)
		}
	}
}

func TestParseReference(t *testing.T) {
	for _, s := range goodTags {
		r, err := oci.ParseReference(s)
		if err != nil || r.IsDigest() || r.Tag() != s || r.String() != s || r.IsZero() {
			t.Errorf("ParseReference(%q) = %+v, %v; want the tag", s, r, err)
		}
		if oci.TagReference(s) != r {
			t.Errorf("TagReference(%q) differs from the parsed reference", s)
		}
	}
	for _, s := range goodDigests {
		r, err := oci.ParseReference(s)
		if err != nil || !r.IsDigest() || r.Tag() != "" || r.String() != s || r.Digest().String() != s {
			t.Errorf("ParseReference(%q) = %+v, %v; want the digest", s, r, err)
		}
		if oci.DigestReference(r.Digest()) != r {
			t.Errorf("DigestReference(%q) differs from the parsed reference", s)
		}
	}
	for _, s := range badTags {
		if _, err := oci.ParseReference(s); err == nil {
			t.Errorf("ParseReference(%q) accepted a bad tag", s)
		} else if !oci.LooksLikeDigest(s) && !errors.Is(err, oci.ErrTag) {
			t.Errorf("ParseReference(%q) = %v, want ErrTag", s, err)
		}
	}
	for _, s := range badDigests {
		// Anything with ':' is judged as a digest, so these are never taken for tags.
		if _, err := oci.ParseReference(s); !errors.Is(err, oci.ErrDigest) {
			t.Errorf("ParseReference(%q) = %v, want ErrDigest", s, err)
		}
	}
	var zero oci.Reference
	if !zero.IsZero() || zero.String() != "" || zero.IsDigest() {
		t.Errorf("zero Reference = %+v", zero)
	}
}

func TestTagReferencePanicsOnBadTag(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("TagReference accepted a bad tag")
		}
	}()
	oci.TagReference("a:b")
}

func TestParseDigest(t *testing.T) {
	for _, s := range goodDigests {
		d, err := oci.ParseDigest(s)
		if err != nil || d.String() != s || d.IsZero() {
			t.Errorf("ParseDigest(%q) = %v, %v", s, d, err)
		}
		alg, hex, _ := strings.Cut(s, ":")
		if string(d.Algorithm()) != alg || d.Hex() != hex {
			t.Errorf("ParseDigest(%q) parts = %s %s", s, d.Algorithm(), d.Hex())
		}
	}
	for _, s := range badDigests {
		if _, err := oci.ParseDigest(s); !errors.Is(err, oci.ErrDigest) {
			t.Errorf("ParseDigest(%q) = %v, want ErrDigest", s, err)
		}
	}
}

// FuzzParseReference checks that whatever parses round-trips, and that tags and digests never mix.
func FuzzParseReference(f *testing.F) {
	for _, s := range append(append(append(goodTags, badTags...), goodDigests...), badDigests...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := oci.ParseReference(s)
		if err != nil {
			if !errors.Is(err, oci.ErrTag) && !errors.Is(err, oci.ErrDigest) {
				t.Fatalf("ParseReference(%q): error %v wraps neither ErrTag nor ErrDigest", s, err)
			}
			return
		}
		if r.String() != s {
			t.Fatalf("ParseReference(%q).String() = %q", s, r.String())
		}
		if r.IsDigest() != strings.Contains(s, ":") {
			t.Fatalf("ParseReference(%q): IsDigest = %v", s, r.IsDigest())
		}
		again, err := oci.ParseReference(r.String())
		if err != nil || again != r {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
	})
}
