package redirector

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/happy-turtle/oci-proxy/oci"
)

// Kind is what a /v2/ request asks for.
type Kind uint8

// The kinds of requests. ParsePath never returns KindOther with a nil error.
const (
	// KindOther is a request outside /v2/ (index page, health, metrics).
	KindOther Kind = iota
	KindBase
	KindManifest
	KindTags
	KindReferrers
	KindBlob
	// KindInvalid is a /v2/ request refused before routing (bad path, method or grammar).
	KindInvalid
)

var kindNames = [...]string{"other", "base", "manifest", "tags", "referrers", "blob", "invalid"}

// String is the name used in logs and metric labels.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// MaxPathLength bounds the request path. The longest valid path is about 420 bytes (a 255-byte name
// and a sha512 digest); anything far longer is an attack or a mistake.
const MaxPathLength = 2048

// MaxQueryLength bounds the query string of tags and referrers requests.
const MaxQueryLength = 1024

// maxPageSize bounds `n` of tags/list; registries cap it themselves, this only rejects nonsense.
const maxPageSize = 100000

// Route is a parsed, validated /v2/ request. Name, Tag and Query hold only characters the OCI
// grammar allows, so they can be placed in a URL as they are.
type Route struct {
	Kind   Kind
	Name   string        // repository name; empty for KindBase
	Ref    oci.Reference // KindManifest: a tag or a digest
	Digest oci.Digest    // KindBlob, KindReferrers
	Query  string        // re-encoded validated query (tags: n, last; referrers: artifactType), or ""
}

// String renders the route as the path (and query) it was parsed from.
func (r Route) String() string {
	var s string
	switch r.Kind {
	case KindBase:
		return "/v2/"
	case KindManifest:
		s = "/v2/" + r.Name + "/manifests/" + r.Ref.String()
	case KindTags:
		s = "/v2/" + r.Name + "/tags/list"
	case KindReferrers:
		s = "/v2/" + r.Name + "/referrers/" + r.Digest.String()
	case KindBlob:
		s = "/v2/" + r.Name + "/blobs/" + r.Digest.String()
	default:
		return ""
	}
	if r.Query != "" {
		s += "?" + r.Query
	}
	return s
}

var (
	errPathInvalid   = errorf(http.StatusBadRequest, CodeNameInvalid, "invalid request path: no encoded characters, empty segments, dot segments or control characters are allowed")
	errPathTooLong   = errorf(http.StatusRequestURITooLong, CodeNameInvalid, "request path too long")
	errNotFound      = errorf(http.StatusNotFound, CodeNameUnknown, "unknown registry endpoint")
	errUploads       = errorf(http.StatusMethodNotAllowed, CodeUnsupported, "this registry serves pulls only; push to the upstream registry")
	errQueryInvalid  = errorf(http.StatusBadRequest, CodeUnsupported, "invalid query string")
	errPageN         = errorf(http.StatusBadRequest, CodePaginationInvalid, "n must be an integer between 0 and 100000")
	errPageLast      = errorf(http.StatusBadRequest, CodePaginationInvalid, "last must be a valid tag")
	errArtifactType  = errorf(http.StatusBadRequest, CodeUnsupported, "artifactType must be a media type such as application/vnd.example+json")
	errTagInvalid    = errorf(http.StatusNotFound, CodeManifestUnknown, "reference is neither a valid tag nor a digest")
	errDigestInvalid = errorf(http.StatusBadRequest, CodeDigestInvalid, "invalid digest: expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>")
)

// checkPath rejects what must never reach the parser: over-long paths, percent-encoding (no valid
// name, tag or digest needs it, so an encoded '/' or '.' can only be a trick), empty and dot
// segments, and control or non-ASCII bytes.
func checkPath(p string) *Error {
	if len(p) > MaxPathLength {
		return errPathTooLong
	}
	if p == "" || p[0] != '/' {
		return errPathInvalid
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= 0x20 || c >= 0x7f || c == '%' || c == '\\' {
			return errPathInvalid
		}
		if c == '/' && i+1 < len(p) {
			next := p[i+1:]
			if next[0] == '/' {
				return errPathInvalid
			}
			if next[0] == '.' && (len(next) == 1 || next[1] == '/' || next[1] == '.' && (len(next) == 2 || next[2] == '/')) {
				return errPathInvalid
			}
		}
	}
	return nil
}

// ParsePath parses the escaped path of a request under /v2 (as from url.URL.EscapedPath) and its raw
// query into a Route. It is the only place where request bytes become routing decisions.
func ParsePath(path, rawQuery string) (Route, *Error) {
	if e := checkPath(path); e != nil {
		return Route{}, e
	}
	return parseChecked(path, rawQuery)
}

// parseChecked is ParsePath for a path that checkPath has passed: the handler checks the path
// before the method, so that a write learns the registry is read-only whatever its grammar, and
// does not walk the path twice.
func parseChecked(path, rawQuery string) (Route, *Error) {
	if path == "/v2" || path == "/v2/" {
		return Route{Kind: KindBase}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return Route{}, errNotFound
	}

	// A name may itself contain "manifests" or "blobs" as a component, so the kind is read from the
	// right: ".../tags/list", or ".../<kind>/<reference>".
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		if e := validName(name); e != nil {
			return Route{}, e
		}
		q, e := tagsQuery(rawQuery)
		if e != nil {
			return Route{}, e
		}
		return Route{Kind: KindTags, Name: name, Query: q}, nil
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return Route{}, errNotFound
	}
	before, ref := rest[:i], rest[i+1:]
	j := strings.LastIndexByte(before, '/')
	if j < 0 {
		return Route{}, errNotFound
	}
	name, kind := before[:j], before[j+1:]

	// The push API (/v2/<name>/blobs/uploads/[<id>]) gets the read-only answer whatever the method.
	if kind == "blobs" && ref == "uploads" || kind == "uploads" && strings.HasSuffix(name, "/blobs") {
		return Route{}, errUploads
	}

	switch kind {
	case "manifests":
		if e := validName(name); e != nil {
			return Route{}, e
		}
		rf, err := oci.ParseReference(ref)
		switch {
		case errors.Is(err, oci.ErrDigest):
			return Route{}, errDigestInvalid
		case err != nil:
			return Route{}, errTagInvalid
		}
		return Route{Kind: KindManifest, Name: name, Ref: rf}, nil
	case "blobs", "referrers":
		if e := validName(name); e != nil {
			return Route{}, e
		}
		d, err := oci.ParseDigest(ref)
		if err != nil {
			return Route{}, errDigestInvalid
		}
		if kind == "blobs" {
			return Route{Kind: KindBlob, Name: name, Digest: d}, nil
		}
		q, e := referrersQuery(rawQuery)
		if e != nil {
			return Route{}, e
		}
		return Route{Kind: KindReferrers, Name: name, Digest: d, Query: q}, nil
	}
	return Route{}, errNotFound
}

func validName(name string) *Error {
	if err := oci.ValidateName(name); err != nil {
		return errorf(http.StatusBadRequest, CodeNameInvalid, nameMessage(err))
	}
	return nil
}

// nameMessage turns a name error into a client message; the oci errors carry no request bytes
// beyond single characters, so they are safe to show.
func nameMessage(err error) string {
	if errors.Is(err, oci.ErrName) {
		return err.Error()
	}
	return "invalid repository name"
}

// tagsQuery keeps the pagination parameters of tags/list, validated and re-encoded in a fixed order;
// anything else is dropped.
func tagsQuery(raw string) (string, *Error) {
	if raw == "" {
		return "", nil
	}
	vals, e := parseQuery(raw)
	if e != nil {
		return "", e
	}
	var b strings.Builder
	if ns, ok := vals["n"]; ok {
		n, err := strconv.Atoi(ns[0])
		if err != nil || n < 0 || n > maxPageSize || len(ns) > 1 {
			return "", errPageN
		}
		b.WriteString("n=")
		b.WriteString(strconv.Itoa(n))
	}
	if ls, ok := vals["last"]; ok {
		if len(ls) > 1 || oci.ValidateTag(ls[0]) != nil {
			return "", errPageLast
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString("last=")
		b.WriteString(ls[0])
	}
	return b.String(), nil
}

// referrersQuery keeps a validated artifactType filter; anything else is dropped.
func referrersQuery(raw string) (string, *Error) {
	if raw == "" {
		return "", nil
	}
	vals, e := parseQuery(raw)
	if e != nil {
		return "", e
	}
	ts, ok := vals["artifactType"]
	if !ok {
		return "", nil
	}
	if len(ts) > 1 || !validMediaType(ts[0]) {
		return "", errArtifactType
	}
	return "artifactType=" + url.QueryEscape(ts[0]), nil
}

func parseQuery(raw string) (url.Values, *Error) {
	if len(raw) > MaxQueryLength {
		return nil, errQueryInvalid
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return nil, errQueryInvalid
	}
	return vals, nil
}

// validMediaType checks type "/" subtype with RFC 6838 restricted-name characters, at most 255 bytes,
// and no parameters: the referrers filter compares media types exactly.
func validMediaType(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	typ, sub, ok := strings.Cut(s, "/")
	return ok && restrictedName(typ) && restrictedName(sub)
}

func restrictedName(s string) bool {
	if s == "" || len(s) > 127 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if alnum || i > 0 && strings.IndexByte("!#$&-^_.+", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
