package oci

import "fmt"

// Reference is what names a manifest in a repository: a tag or a digest. A string is a digest
// when it contains ':' (a tag cannot), so "sha256:abc" is a malformed digest, never a tag. The
// zero value is no reference.
type Reference struct {
	tag    string
	digest Digest
}

// ParseReference parses s as a digest when it contains ':', else as a tag. Errors wrap ErrDigest
// or ErrTag, so that callers can answer DIGEST_INVALID or MANIFEST_UNKNOWN as the distribution
// spec does.
func ParseReference(s string) (Reference, error) {
	if LooksLikeDigest(s) {
		d, err := ParseDigest(s)
		if err != nil {
			return Reference{}, err
		}
		return Reference{digest: d}, nil
	}
	if err := ValidateTag(s); err != nil {
		return Reference{}, err
	}
	return Reference{tag: s}, nil
}

// TagReference returns the reference of a tag that ValidateTag accepted; it panics otherwise, so
// use it only on constants and checked values.
func TagReference(tag string) Reference {
	if err := ValidateTag(tag); err != nil {
		panic(fmt.Sprintf("oci.TagReference(%q): %v", tag, err))
	}
	return Reference{tag: tag}
}

// DigestReference returns the reference of a digest.
func DigestReference(d Digest) Reference { return Reference{digest: d} }

// IsDigest reports whether r is a digest (immutable content) rather than a tag.
func (r Reference) IsDigest() bool { return !r.digest.IsZero() }

// IsZero reports whether r is the zero Reference.
func (r Reference) IsZero() bool { return r.tag == "" && r.digest.IsZero() }

// Tag returns the tag, or "" for a digest.
func (r Reference) Tag() string { return r.tag }

// Digest returns the digest, or the zero Digest for a tag.
func (r Reference) Digest() Digest { return r.digest }

// String returns the tag or the digest as written in a URL.
func (r Reference) String() string {
	if r.tag != "" {
		return r.tag
	}
	return r.digest.String()
}

// Equal reports whether r and o are the same reference (for go-cmp, which uses it).
func (r Reference) Equal(o Reference) bool { return r == o }
