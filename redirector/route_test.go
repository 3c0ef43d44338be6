package redirector

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/happy-turtle/oci-proxy/oci"
)

const (
	hex64  = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	hex128 = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)

func mustDigest(t testing.TB, s string) oci.Digest {
	t.Helper()
	d, err := oci.ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// validPaths are requests the parser must accept, with the route it must produce.
var validPaths = []struct {
	path, query string
	want        Route
}{
	{"/v2/", "", Route{Kind: KindBase}},
	{"/v2", "", Route{Kind: KindBase}},
	{"/v2/app/manifests/1.0", "", Route{Kind: KindManifest, Name: "app", Ref: oci.TagReference("1.0")}},
	{"/v2/app/manifests/latest", "ignored=1", Route{Kind: KindManifest, Name: "app", Ref: oci.TagReference("latest")}},
	{"/v2/a/b/c/manifests/v1.2.3-rc_1", "", Route{Kind: KindManifest, Name: "a/b/c", Ref: oci.TagReference("v1.2.3-rc_1")}},
	{"/v2/my-app/manifests/_x", "", Route{Kind: KindManifest, Name: "my-app", Ref: oci.TagReference("_x")}},
	{"/v2/my--app/manifests/X", "", Route{Kind: KindManifest, Name: "my--app", Ref: oci.TagReference("X")}},
	{"/v2/a.b_c__d/manifests/x", "", Route{Kind: KindManifest, Name: "a.b_c__d", Ref: oci.TagReference("x")}},
	{"/v2/app/manifests/" + strings.Repeat("t", 128), "", Route{Kind: KindManifest, Name: "app", Ref: oci.TagReference(strings.Repeat("t", 128))}},
	// A name may contain the words the parser looks for: the kind is read from the right.
	{"/v2/manifests/manifests/manifests", "", Route{Kind: KindManifest, Name: "manifests", Ref: oci.TagReference("manifests")}},
	{"/v2/x/blobs/y/manifests/tags", "", Route{Kind: KindManifest, Name: "x/blobs/y", Ref: oci.TagReference("tags")}},
	{"/v2/tags/list/tags/list", "", Route{Kind: KindTags, Name: "tags/list"}},
	{"/v2/app/manifests/sha256:" + hex64, "", Route{Kind: KindManifest, Name: "app"}},
	{"/v2/app/manifests/sha512:" + hex128, "", Route{Kind: KindManifest, Name: "app"}},
	{"/v2/app/blobs/sha256:" + hex64, "", Route{Kind: KindBlob, Name: "app"}},
	{"/v2/org/app/blobs/sha512:" + hex128, "x=1", Route{Kind: KindBlob, Name: "org/app"}},
	{"/v2/app/tags/list", "", Route{Kind: KindTags, Name: "app"}},
	{"/v2/app/tags/list", "n=10", Route{Kind: KindTags, Name: "app", Query: "n=10"}},
	{"/v2/app/tags/list", "last=v1&n=5&evil=http://x", Route{Kind: KindTags, Name: "app", Query: "n=5&last=v1"}},
	{"/v2/app/tags/list", "n=0", Route{Kind: KindTags, Name: "app", Query: "n=0"}},
	{"/v2/app/referrers/sha256:" + hex64, "", Route{Kind: KindReferrers, Name: "app"}},
	{"/v2/app/referrers/sha256:" + hex64, "artifactType=application/vnd.example.sbom%2Bjson", Route{Kind: KindReferrers, Name: "app", Query: "artifactType=application%2Fvnd.example.sbom%2Bjson"}},
	{"/v2/" + strings.Repeat("a", 255) + "/manifests/x", "", Route{Kind: KindManifest, Name: strings.Repeat("a", 255), Ref: oci.TagReference("x")}},
}

func TestParsePathValid(t *testing.T) {
	for _, tc := range validPaths {
		t.Run(tc.path+"?"+tc.query, func(t *testing.T) {
			got, e := ParsePath(tc.path, tc.query)
			if e != nil {
				t.Fatalf("ParsePath: %v", e)
			}
			want := tc.want
			if ref := tc.path[strings.LastIndexByte(tc.path, '/')+1:]; strings.Contains(ref, ":") {
				if want.Kind == KindManifest {
					want.Ref = oci.DigestReference(mustDigest(t, ref))
				} else {
					want.Digest = mustDigest(t, ref)
				}
			}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(oci.Digest{})); diff != "" {
				t.Errorf("route (-want +got):\n%s", diff)
			}
		})
	}
}

// invalidPaths are requests the parser must refuse, with the status and OCI code.
var invalidPaths = []struct {
	name, path, query string
	status            int
	code              string
}{
	{"uppercase name", "/v2/App/manifests/1", "", 400, CodeNameInvalid},
	{"name starts with dash", "/v2/-app/manifests/1", "", 400, CodeNameInvalid},
	{"name ends with dot", "/v2/app./manifests/1", "", 400, CodeNameInvalid},
	{"triple underscore", "/v2/a___b/manifests/1", "", 400, CodeNameInvalid},
	{"dot dash", "/v2/a.-b/manifests/1", "", 400, CodeNameInvalid},
	{"name too long", "/v2/" + strings.Repeat("a", 256) + "/manifests/x", "", 400, CodeNameInvalid},
	{"empty name", "/v2//manifests/x", "", 400, CodeNameInvalid},
	{"dot segment", "/v2/a/../b/manifests/x", "", 400, CodeNameInvalid},
	{"single dot segment", "/v2/a/./b/manifests/x", "", 400, CodeNameInvalid},
	{"trailing dot dot", "/v2/a/manifests/..", "", 400, CodeNameInvalid},
	{"double slash", "/v2/a//b/manifests/x", "", 400, CodeNameInvalid},
	{"encoded slash", "/v2/a%2fb/manifests/x", "", 400, CodeNameInvalid},
	{"encoded slash upper", "/v2/a%2Fb/manifests/x", "", 400, CodeNameInvalid},
	{"encoded dot", "/v2/a/%2e%2e/manifests/x", "", 400, CodeNameInvalid},
	{"encoded letter", "/v2/%61pp/manifests/x", "", 400, CodeNameInvalid},
	{"control char", "/v2/a\x00b/manifests/x", "", 400, CodeNameInvalid},
	{"newline", "/v2/a/manifests/x\r\nLocation: http://evil", "", 400, CodeNameInvalid},
	{"space", "/v2/a b/manifests/x", "", 400, CodeNameInvalid},
	{"backslash", "/v2/a\\b/manifests/x", "", 400, CodeNameInvalid},
	{"non-ascii", "/v2/ä/manifests/x", "", 400, CodeNameInvalid},
	{"very long path", "/v2/" + strings.Repeat("a/", 2000) + "manifests/x", "", 414, CodeNameInvalid},
	{"tag with colon-free junk", "/v2/app/manifests/-x", "", 404, CodeManifestUnknown},
	{"tag too long", "/v2/app/manifests/" + strings.Repeat("t", 129), "", 404, CodeManifestUnknown},
	{"tag with plus", "/v2/app/manifests/1+2", "", 404, CodeManifestUnknown},
	{"empty tag", "/v2/app/manifests/", "", 404, CodeManifestUnknown},
	{"digest short", "/v2/app/manifests/sha256:abc", "", 400, CodeDigestInvalid},
	{"digest uppercase hex", "/v2/app/blobs/sha256:" + strings.ToUpper(hex64), "", 400, CodeDigestInvalid},
	{"digest unknown algorithm", "/v2/app/blobs/md5:" + hex64[:32], "", 400, CodeDigestInvalid},
	{"digest sha512 length on sha256", "/v2/app/blobs/sha256:" + hex128, "", 400, CodeDigestInvalid},
	{"digest not hex", "/v2/app/blobs/sha256:" + strings.Repeat("g", 64), "", 400, CodeDigestInvalid},
	{"blob by tag", "/v2/app/blobs/latest", "", 400, CodeDigestInvalid},
	{"blob empty", "/v2/app/blobs/", "", 400, CodeDigestInvalid},
	{"referrers by tag", "/v2/app/referrers/latest", "", 400, CodeDigestInvalid},
	{"uploads", "/v2/app/blobs/uploads/", "", 405, CodeUnsupported},
	{"upload session", "/v2/app/blobs/uploads/0b5e1f", "", 405, CodeUnsupported},
	{"uploads no slash", "/v2/app/blobs/uploads", "", 405, CodeUnsupported},
	{"unknown endpoint", "/v2/app/things/x", "", 404, CodeNameUnknown},
	{"catalog", "/v2/_catalog", "", 404, CodeNameUnknown},
	{"not v2", "/v3/app/manifests/x", "", 404, CodeNameUnknown},
	{"tags n negative", "/v2/app/tags/list", "n=-1", 400, CodePaginationInvalid},
	{"tags n text", "/v2/app/tags/list", "n=ten", 400, CodePaginationInvalid},
	{"tags n huge", "/v2/app/tags/list", "n=99999999999999999999", 400, CodePaginationInvalid},
	{"tags n twice", "/v2/app/tags/list", "n=1&n=2", 400, CodePaginationInvalid},
	{"tags last invalid", "/v2/app/tags/list", "last=a/b", 400, CodePaginationInvalid},
	{"tags bad escape", "/v2/app/tags/list", "n=%zz", 400, CodeUnsupported},
	{"tags query too long", "/v2/app/tags/list", "x=" + strings.Repeat("a", 2000), 400, CodeUnsupported},
	{"artifactType with params", "/v2/app/referrers/sha256:" + hex64, "artifactType=text/plain;charset=utf-8", 400, CodeUnsupported},
	{"artifactType no slash", "/v2/app/referrers/sha256:" + hex64, "artifactType=json", 400, CodeUnsupported},
}

func TestParsePathInvalid(t *testing.T) {
	for _, tc := range invalidPaths {
		t.Run(tc.name, func(t *testing.T) {
			got, e := ParsePath(tc.path, tc.query)
			if e == nil {
				t.Fatalf("ParsePath(%q, %q) = %+v, want error %s", tc.path, tc.query, got, tc.code)
			}
			if e.Status != tc.status || e.Code != tc.code {
				t.Errorf("got %d %s (%s), want %d %s", e.Status, e.Code, e.Message, tc.status, tc.code)
			}
		})
	}
}

// TestRouteRoundTrip checks that rendering a parsed route and parsing it again gives the same route.
func TestRouteRoundTrip(t *testing.T) {
	for _, tc := range validPaths {
		r, e := ParsePath(tc.path, tc.query)
		if e != nil {
			t.Fatalf("%s: %v", tc.path, e)
		}
		checkRoundTrip(t, r)
	}
}

func checkRoundTrip(t *testing.T, r Route) {
	t.Helper()
	s := r.String()
	path, query, _ := strings.Cut(s, "?")
	again, e := ParsePath(path, query)
	if e != nil {
		t.Fatalf("re-parse %q: %v", s, e)
	}
	if diff := cmp.Diff(r, again, cmp.AllowUnexported(oci.Digest{})); diff != "" {
		t.Fatalf("round trip of %q (-first +second):\n%s", s, diff)
	}
}
