// Package oci holds the parts of the OCI distribution grammar that every other package shares:
// repository names, tags and digests, parsed once into types. It does no I/O and knows nothing of
// HTTP, mirrors or configuration.
package oci

import (
	"errors"
	"fmt"
	"strings"
)

// Algorithm is a digest algorithm the proxy accepts.
type Algorithm string

// The algorithms of the OCI image spec; others (blake3, ...) are refused with DIGEST_INVALID rather
// than sent on to an upstream that may not know them either.
const (
	SHA256 Algorithm = "sha256"
	SHA512 Algorithm = "sha512"
)

// hexLen is the encoded length of each algorithm's digest.
func (a Algorithm) hexLen() int {
	switch a {
	case SHA256:
		return 64
	case SHA512:
		return 128
	}
	return 0
}

// Digest is a validated content digest such as "sha256:<64 lowercase hex>".
// The zero value is not a valid digest.
type Digest struct {
	alg Algorithm
	hex string
}

// ErrDigest is wrapped by every digest parse error.
var ErrDigest = errors.New("invalid digest")

// ParseDigest validates s as "<algorithm>:<hex>" with a registered algorithm and the exact length of
// lowercase hex that algorithm produces.
func ParseDigest(s string) (Digest, error) {
	alg, enc, ok := strings.Cut(s, ":")
	if !ok {
		return Digest{}, fmt.Errorf("%w: missing algorithm", ErrDigest)
	}
	a := Algorithm(alg)
	n := a.hexLen()
	if n == 0 {
		return Digest{}, fmt.Errorf("%w: unsupported algorithm", ErrDigest)
	}
	if len(enc) != n {
		return Digest{}, fmt.Errorf("%w: %s needs %d hex characters, got %d", ErrDigest, alg, n, len(enc))
	}
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return Digest{}, fmt.Errorf("%w: encoded part must be lowercase hex", ErrDigest)
		}
	}
	return Digest{alg: a, hex: enc}, nil
}

// LooksLikeDigest reports whether s has the shape "<alg>:<something>" and so must be judged as a
// digest, not a tag (a tag cannot contain ':').
func LooksLikeDigest(s string) bool { return strings.IndexByte(s, ':') >= 0 }

// Algorithm returns the digest's algorithm.
func (d Digest) Algorithm() Algorithm { return d.alg }

// Hex returns the encoded part.
func (d Digest) Hex() string { return d.hex }

// String returns "<alg>:<hex>".
func (d Digest) String() string {
	if d.alg == "" {
		return ""
	}
	return string(d.alg) + ":" + d.hex
}

// IsZero reports whether d is the zero Digest.
func (d Digest) IsZero() bool { return d.alg == "" }
