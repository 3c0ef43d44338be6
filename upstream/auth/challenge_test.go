package auth

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func bearer(params ...string) Challenge {
	c := Challenge{Scheme: "bearer", Params: map[string]string{}}
	for i := 0; i < len(params); i += 2 {
		c.Params[params[i]] = params[i+1]
	}
	return c
}

var goodChallenges = []struct {
	name, header string
	want         []Challenge
}{
	{"ghcr", `Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/app:pull"`,
		[]Challenge{bearer("realm", "https://ghcr.io/token", "service", "ghcr.io", "scope", "repository:acme/app:pull")}},
	{"docker hub", `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`,
		[]Challenge{bearer("realm", "https://auth.docker.io/token", "service", "registry.docker.io", "scope", "repository:library/alpine:pull")}},
	{"distribution, insufficient scope", `Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:samalba/my-app:pull,push",error="insufficient_scope"`,
		[]Challenge{bearer("realm", "https://auth.example.com/token", "service", "registry.example.com", "scope", "repository:samalba/my-app:pull,push", "error", "insufficient_scope")}},
	{"quay, no scope", `Bearer realm="https://quay.io/v2/auth",service="quay.io"`,
		[]Challenge{bearer("realm", "https://quay.io/v2/auth", "service", "quay.io")}},
	{"basic", `Basic realm="Registry Realm"`,
		[]Challenge{{Scheme: "basic", Params: map[string]string{"realm": "Registry Realm"}}}},
	{"ecr", `Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com"`,
		[]Challenge{{Scheme: "basic", Params: map[string]string{"realm": "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/", "service": "ecr.amazonaws.com"}}}},
	{"two challenges", `Basic realm="r", Bearer realm="https://a.example/token",service="s"`,
		[]Challenge{{Scheme: "basic", Params: map[string]string{"realm": "r"}}, bearer("realm", "https://a.example/token", "service", "s")}},
	{"case-insensitive scheme and names, token value", `BEARER Realm="https://a.example/token",SERVICE=svc.example`,
		[]Challenge{bearer("realm", "https://a.example/token", "service", "svc.example")}},
	{"escapes", `Bearer realm="https://a.example/token",error_description="say \"hi\" \\ \there"`,
		[]Challenge{bearer("realm", "https://a.example/token", "error_description", `say "hi" \ there`)}},
	{"white space around '=' and ','", "Bearer realm = \"https://a.example/token\" ,\tservice = \"s\"",
		[]Challenge{bearer("realm", "https://a.example/token", "service", "s")}},
	{"empty list elements", `, Bearer realm="x",, service="s" ,,`,
		[]Challenge{bearer("realm", "x", "service", "s")}},
	{"token68 beside a bearer", `Negotiate abc123+/==, Bearer realm="x"`,
		[]Challenge{{Scheme: "negotiate"}, bearer("realm", "x")}},
	// By the grammar this is a token68, not a parameter without a value.
	{"parameter without a value", `Bearer realm=`, []Challenge{{Scheme: "bearer"}}},
	{"scheme alone", `Bearer`, []Challenge{{Scheme: "bearer"}}},
	{"scheme alone, then another", `Bearer, Basic`, []Challenge{{Scheme: "bearer"}, {Scheme: "basic"}}},
	{"empty quoted value", `Bearer realm=""`, []Challenge{bearer("realm", "")}},
	{"obs-text kept", "Bearer realm=\"caf\xc3\xa9\"", []Challenge{bearer("realm", "café")}},
	{"comma inside quotes", `Bearer realm="a,b", scope="repository:x:pull,push"`,
		[]Challenge{bearer("realm", "a,b", "scope", "repository:x:pull,push")}},
}

var badChallenges = []struct{ name, header string }{
	{"empty", ""},
	{"spaces", "   "},
	{"commas", ", ,"},
	{"unterminated quote", `Bearer realm="https://a.example/token`},
	{"unterminated after escape", `Bearer realm="abc\`},
	{"escaped control character", "Bearer realm=\"a\\\x01\""},
	{"missing scheme", `realm="x"`},
	{"missing scheme, '=' first", `="x"`},
	{"missing value before comma", `Bearer realm=,service="s"`},
	{"missing '='", `Bearer realm "x"`},
	{"control character", "Bearer realm=\"a\x01b\""},
	{"newline", "Bearer realm=\"a\nb\""},
	{"DEL", "Bearer realm=\"a\x7fb\""},
	{"parameter twice", `Bearer realm="a",REALM="b"`},
	{"garbage after a value", `Bearer realm="a"b`},
	{"no space after the scheme", `Bearer"x"`},
	{"non-token scheme", `Be@rer realm="x"`},
	{"unquoted value with '/'", `Bearer realm=https://a.example/token`},
	{"huge", `Bearer realm="` + strings.Repeat("a", maxChallengeBytes) + `"`},
	{"too many parameters", "Bearer " + manyParams(maxParams+1)},
	{"too many challenges", strings.TrimSuffix(strings.Repeat("Basic, ", maxChallenges+1), ", ")},
}

func manyParams(n int) string {
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf("p%d=v", i)
	}
	return strings.Join(p, ",")
}

func TestParseChallenge(t *testing.T) {
	for _, tc := range goodChallenges {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseChallenge(tc.header)
			if err != nil {
				t.Fatalf("ParseChallenge(%q): %v", tc.header, err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("ParseChallenge(%q) (-want +got):\n%s", tc.header, d)
			}
		})
	}
	for _, tc := range badChallenges {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseChallenge(tc.header)
			if !errors.Is(err, ErrChallenge) {
				t.Fatalf("ParseChallenge(%.60q) = %v, %v; want an ErrChallenge", tc.header, got, err)
			}
		})
	}
}

func TestParseChallengeBounds(t *testing.T) {
	// The bounds themselves are accepted: they are limits, not off by one.
	for _, h := range []string{
		"Bearer " + manyParams(maxParams),
		strings.TrimSuffix(strings.Repeat("Basic, ", maxChallenges), ", "),
		`Bearer realm="` + strings.Repeat("a", maxChallengeBytes-len(`Bearer realm=""`)) + `"`,
	} {
		if _, err := ParseChallenge(h); err != nil {
			t.Errorf("ParseChallenge(%.60q): %v", h, err)
		}
	}
}

func TestChallengeHeader(t *testing.T) {
	for _, tc := range []struct {
		realm, service, scope, want string
	}{
		{"https://proxy.example/v2/token", "oci-proxy", "repository:tools/lint:pull",
			`Bearer realm="https://proxy.example/v2/token",service="oci-proxy",scope="repository:tools/lint:pull"`},
		{"https://proxy.example/v2/token", "oci-proxy", "", `Bearer realm="https://proxy.example/v2/token",service="oci-proxy"`},
		{"https://proxy.example/v2/token", "", "", `Bearer realm="https://proxy.example/v2/token"`},
		{`a"b\c`, "", "", `Bearer realm="a\"b\\c"`},
		{"a\r\nSet-Cookie: x", "", "", `Bearer realm="a  Set-Cookie: x"`},
	} {
		got := ChallengeHeader(tc.realm, tc.service, tc.scope)
		if got != tc.want {
			t.Errorf("ChallengeHeader(%q, %q, %q) = %s, want %s", tc.realm, tc.service, tc.scope, got, tc.want)
		}
		if _, err := ParseChallenge(got); err != nil {
			t.Errorf("ParseChallenge(%s): %v", got, err)
		}
	}
}

func TestChallengeString(t *testing.T) {
	c := bearer("service", "s", "realm", `a"b`)
	if got, want := c.String(), `bearer realm="a\"b",service="s"`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	if got := (Challenge{Scheme: "basic"}).String(); got != "basic" {
		t.Errorf("String() = %s, want basic", got)
	}
}

func TestValidRealm(t *testing.T) {
	for _, tc := range []struct {
		realm, want string // want "" means refused
	}{
		{"https://ghcr.io/token", "https://ghcr.io/token"},
		{"http://127.0.0.1:5001/auth?x=1", "http://127.0.0.1:5001/auth?x=1"},
		{"HTTPS://auth.docker.io/token#frag", "https://auth.docker.io/token"},
		{"", ""},
		{"/token", ""},
		{"ghcr.io/token", ""},
		{"ftp://ghcr.io/token", ""},
		{"file:///etc/passwd", ""},
		{"javascript:alert(1)", ""},
		{"https:opaque", ""},
		{"https:///token", ""},
		{"https://user@ghcr.io/token", ""},
		{"https://user:s3cr3t@ghcr.io/token", ""},
		{"https://ghcr.io/%zz", ""},
		{"https://ghcr.io/\x00", ""},
	} {
		u, err := ValidRealm(tc.realm)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ValidRealm(%q) = %s, want refused", tc.realm, u)
		case tc.want == "" && !errors.Is(err, ErrRealm):
			t.Errorf("ValidRealm(%q) error %v does not wrap ErrRealm", tc.realm, err)
		case tc.want == "" && strings.Contains(err.Error(), "s3cr3t"):
			t.Errorf("ValidRealm(%q) error %q repeats the realm's password", tc.realm, err)
		case tc.want != "" && err != nil:
			t.Errorf("ValidRealm(%q): %v", tc.realm, err)
		case tc.want != "" && u.String() != tc.want:
			t.Errorf("ValidRealm(%q) = %s, want %s", tc.realm, u, tc.want)
		}
	}
}

func TestCheckRealmRefusesDowngrade(t *testing.T) {
	for _, tc := range []struct {
		realm, registry string
		ok              bool
	}{
		{"https://auth.example/token", "https://registry.example/v2/", true},
		{"http://auth.example/token", "https://registry.example/v2/", false},
		{"http://auth.example/token", "http://registry.example/v2/", true},
		{"https://auth.example/token", "http://registry.example/v2/", true},
	} {
		_, err := checkRealm(tc.realm, mustParse(t, tc.registry))
		if (err == nil) != tc.ok {
			t.Errorf("checkRealm(%s, %s): %v, want ok %v", tc.realm, tc.registry, err, tc.ok)
		}
	}
}
