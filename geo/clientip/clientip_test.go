package clientip_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/happy-turtle/oci-proxy/geo/clientip"
)

// trustedForTests are the proxies the client tests trust: a private network, loopback and a
// private IPv6 range.
func trustedForTests(t testing.TB) []netip.Prefix {
	return mustPrefixes(t, "10.0.0.0/8", "127.0.0.1/32", "::1/128", "fd00::/8")
}

type resolveCase struct {
	name      string
	remote    string
	xff       string // header lines separated by \n
	forwarded string
	want      string
}

func resolveCases() []resolveCase {
	many := func(n int, f func(i int) string) string {
		var parts []string
		for i := 1; i <= n; i++ {
			parts = append(parts, f(i))
		}
		return strings.Join(parts, ", ")
	}
	return []resolveCase{
		// The connection's address when it is not a trusted proxy, whatever it claims.
		{name: "untrusted remote, no headers", remote: "81.2.69.142", want: "81.2.69.142"},
		{name: "spoofed XFF from untrusted remote", remote: "81.2.69.142", xff: "89.160.20.1", want: "81.2.69.142"},
		{name: "spoofed XFF claiming a trusted hop", remote: "81.2.69.142", xff: "10.0.0.1", want: "81.2.69.142"},
		{name: "spoofed Forwarded from untrusted remote", remote: "81.2.69.142", forwarded: "for=89.160.20.1", want: "81.2.69.142"},
		{name: "untrusted IPv6 remote", remote: "2001:db8:de::1", xff: "81.2.69.142", want: "2001:db8:de::1"},
		{name: "untrusted mapped remote is unmapped", remote: "::ffff:81.2.69.142", xff: "1.2.3.4", want: "81.2.69.142"},
		{name: "invalid remote", remote: "", xff: "81.2.69.142", want: ""},

		// A trusted proxy speaking for itself.
		{name: "trusted proxy without headers", remote: "10.0.0.1", want: "10.0.0.1"},
		{name: "trusted proxy with empty headers", remote: "10.0.0.1", xff: " , ,", want: "10.0.0.1"},
		{name: "trusted mapped remote", remote: "::ffff:10.0.0.1", xff: "81.2.69.142", want: "81.2.69.142"},

		// X-Forwarded-For chains.
		{name: "one hop", remote: "10.0.0.1", xff: "81.2.69.142", want: "81.2.69.142"},
		{name: "chain of proxies", remote: "10.0.0.1", xff: "81.2.69.142, 10.0.0.3, 10.0.0.2", want: "81.2.69.142"},
		{name: "client-supplied hops left of the client are ignored", remote: "10.0.0.1", xff: "1.1.1.1, 8.8.8.8, 81.2.69.142, 10.0.0.2", want: "81.2.69.142"},
		{name: "client claiming to be a trusted proxy", remote: "10.0.0.1", xff: "10.9.9.9, 81.2.69.142", want: "81.2.69.142"},
		{name: "all hops trusted: leftmost", remote: "10.0.0.1", xff: "10.0.0.4, 10.0.0.3, 10.0.0.2", want: "10.0.0.4"},
		{name: "multiple header lines, last line rightmost", remote: "10.0.0.1", xff: "1.1.1.1, 81.2.69.142\n10.0.0.3, 10.0.0.2", want: "81.2.69.142"},
		{name: "multiple header lines, client in last line", remote: "10.0.0.1", xff: "1.1.1.1\n81.2.69.142, 10.0.0.2", want: "81.2.69.142"},
		{name: "empty elements skipped", remote: "10.0.0.1", xff: ",81.2.69.142,, ,10.0.0.2,", want: "81.2.69.142"},
		{name: "no spaces", remote: "10.0.0.1", xff: "1.1.1.1,81.2.69.142,10.0.0.2", want: "81.2.69.142"},
		{name: "tabs", remote: "10.0.0.1", xff: "81.2.69.142\t,\t10.0.0.2", want: "81.2.69.142"},
		{name: "IPv4 with port", remote: "10.0.0.1", xff: "81.2.69.142:51234", want: "81.2.69.142"},
		{name: "IPv6 bare", remote: "10.0.0.1", xff: "2001:db8:de::1", want: "2001:db8:de::1"},
		{name: "IPv6 bracketed", remote: "10.0.0.1", xff: "[2001:db8:de::1]", want: "2001:db8:de::1"},
		{name: "IPv6 bracketed with port", remote: "::1", xff: "[2001:db8:de::1]:443", want: "2001:db8:de::1"},
		{name: "IPv6 chain through trusted IPv6 proxies", remote: "::1", xff: "2001:db8:de::1, fd00::2, fd00::3", want: "2001:db8:de::1"},
		{name: "IPv4-mapped hop unmapped", remote: "10.0.0.1", xff: "::ffff:81.2.69.142", want: "81.2.69.142"},
		{name: "IPv4-mapped trusted hop is trusted", remote: "10.0.0.1", xff: "81.2.69.142, ::ffff:10.0.0.2", want: "81.2.69.142"},
		{name: "zone dropped", remote: "10.0.0.1", xff: "fe80::1%eth0", want: "fe80::1"},
		// Found by FuzzResolve: netip accepts any bytes as a zone.
		{name: "zone of garbage is a malformed hop", remote: "10.0.0.1", xff: "81.2.69.142, fe80::1% x", want: "10.0.0.1"},
		{name: "quoted forwarded zone of garbage", remote: "10.0.0.1", forwarded: `for="[::% 00000000000]"`, want: "10.0.0.1"},
		{name: "garbage after the client", remote: "10.0.0.1", xff: "81.2.69.142, garbage", want: "10.0.0.1"},
		{name: "garbage stops the walk at the last good hop", remote: "10.0.0.1", xff: "81.2.69.142, garbage, 10.0.0.2", want: "10.0.0.2"},
		{name: "garbage left of the client is never reached", remote: "10.0.0.1", xff: "garbage, 81.2.69.142, 10.0.0.2", want: "81.2.69.142"},
		{name: "unknown in XFF stops the walk", remote: "10.0.0.1", xff: "81.2.69.142, unknown", want: "10.0.0.1"},
		{name: "bracketed IPv4 is garbage", remote: "10.0.0.1", xff: "[81.2.69.142]", want: "10.0.0.1"},
		{name: "unbalanced bracket", remote: "10.0.0.1", xff: "[2001:db8:de::1", want: "10.0.0.1"},
		{name: "bad port", remote: "10.0.0.1", xff: "81.2.69.142:port", want: "10.0.0.1"},
		{name: "leading zeros refused", remote: "10.0.0.1", xff: "081.002.069.142", want: "10.0.0.1"},
		{name: "quoted XFF element", remote: "10.0.0.1", xff: `"81.2.69.142"`, want: "10.0.0.1"},
		{name: "CIDR is garbage", remote: "10.0.0.1", xff: "81.2.69.0/24", want: "10.0.0.1"},
		{name: "hops beyond the bound are ignored", remote: "10.0.0.1",
			xff:  many(100, func(i int) string { return fmt.Sprintf("1.1.1.%d", i) }) + ", 81.2.69.142, 10.0.0.2",
			want: "81.2.69.142"},
		{name: "all-trusted chain longer than the bound: leftmost kept hop", remote: "10.0.0.1",
			xff:  many(100, func(i int) string { return fmt.Sprintf("10.0.1.%d", i) }),
			want: fmt.Sprintf("10.0.1.%d", 100-clientip.MaxHops+1)},
		{name: "huge header: only its end counts", remote: "10.0.0.1",
			xff:  strings.Repeat("garbage,", 100000) + "81.2.69.142, 10.0.0.2",
			want: "81.2.69.142"},
		{name: "huge all-trusted header stops at the cut", remote: "10.0.0.1",
			xff:  strings.Repeat("10.0.0.9,", 100000) + "10.0.0.2",
			want: "10.0.0.9"},

		// Forwarded (RFC 7239).
		{name: "Forwarded for", remote: "10.0.0.1", forwarded: "for=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded quoted", remote: "10.0.0.1", forwarded: `for="81.2.69.142"`, want: "81.2.69.142"},
		{name: "Forwarded parameter name case", remote: "10.0.0.1", forwarded: "For=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded IPv4 with port", remote: "10.0.0.1", forwarded: `for="81.2.69.142:4711"`, want: "81.2.69.142"},
		{name: "Forwarded IPv6 with port", remote: "10.0.0.1", forwarded: `for="[2001:db8:de::1]:4711"`, want: "2001:db8:de::1"},
		{name: "Forwarded IPv6 bracketed", remote: "10.0.0.1", forwarded: `for="[2001:db8:de::1]"`, want: "2001:db8:de::1"},
		{name: "Forwarded IPv6 unbracketed, tolerated", remote: "10.0.0.1", forwarded: `for="2001:db8:de::1"`, want: "2001:db8:de::1"},
		{name: "Forwarded with other parameters", remote: "10.0.0.1", forwarded: "for=81.2.69.142;proto=https;by=10.0.0.1;host=example.com", want: "81.2.69.142"},
		{name: "Forwarded for not first", remote: "10.0.0.1", forwarded: "proto=https; for=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded chain", remote: "10.0.0.1", forwarded: "for=1.1.1.1, for=81.2.69.142, for=10.0.0.2", want: "81.2.69.142"},
		{name: "Forwarded multiple lines", remote: "10.0.0.1", forwarded: "for=1.1.1.1, for=81.2.69.142\nfor=10.0.0.2;proto=https", want: "81.2.69.142"},
		{name: "Forwarded all trusted", remote: "10.0.0.1", forwarded: "for=10.0.0.3, for=10.0.0.2", want: "10.0.0.3"},
		{name: "Forwarded mapped", remote: "10.0.0.1", forwarded: `for="[::ffff:81.2.69.142]"`, want: "81.2.69.142"},
		{name: "Forwarded preferred over XFF", remote: "10.0.0.1", forwarded: "for=81.2.69.142", xff: "89.160.20.1", want: "81.2.69.142"},
		{name: "Forwarded without for falls back to XFF", remote: "10.0.0.1", forwarded: "proto=https;host=example.com", xff: "89.160.20.1", want: "89.160.20.1"},
		{name: "Forwarded unknown stops the walk", remote: "10.0.0.1", forwarded: "for=81.2.69.142, for=unknown, for=10.0.0.2", want: "10.0.0.2"},
		{name: "Forwarded unknown rightmost", remote: "10.0.0.1", forwarded: "for=81.2.69.142, for=unknown", want: "10.0.0.1"},
		{name: "Forwarded obfuscated", remote: "10.0.0.1", forwarded: "for=81.2.69.142, for=_hidden, for=10.0.0.2", want: "10.0.0.2"},
		{name: "Forwarded obfuscated quoted with port", remote: "10.0.0.1", forwarded: `for="_gazonk:_port"`, want: "10.0.0.1"},
		{name: "Forwarded element without for stops the walk", remote: "10.0.0.1", forwarded: "for=81.2.69.142, proto=https", want: "10.0.0.1"},
		{name: "Forwarded empty elements skipped", remote: "10.0.0.1", forwarded: "for=81.2.69.142, , ;,for=10.0.0.2,", want: "81.2.69.142"},
		{name: "Forwarded quoted comma and semicolon", remote: "10.0.0.1", forwarded: `for=81.2.69.142;host="a,b;c", for=10.0.0.2`, want: "81.2.69.142"},
		{name: "Forwarded escaped quote in another parameter", remote: "10.0.0.1", forwarded: `for=81.2.69.142;ext="a\"b,c", for=10.0.0.2`, want: "81.2.69.142"},
		{name: "Forwarded escaped for value is not an address", remote: "10.0.0.1", forwarded: `for=81.2.69.142, for="\8\1.2.69.142"`, want: "10.0.0.1"},
		{name: "Forwarded unterminated quote", remote: "10.0.0.1", forwarded: `for=81.2.69.142, for="10.0.0.2`, want: "10.0.0.1"},
		{name: "Forwarded two for in one element", remote: "10.0.0.1", forwarded: "for=89.160.20.1;for=81.2.69.142", want: "10.0.0.1"},
		{name: "Forwarded empty for", remote: "10.0.0.1", forwarded: "for=", want: "10.0.0.1"},
		{name: "Forwarded empty quoted for", remote: "10.0.0.1", forwarded: `for=""`, want: "10.0.0.1"},
		{name: "Forwarded missing equals", remote: "10.0.0.1", forwarded: "for, for=10.0.0.2", want: "10.0.0.2"},
		{name: "Forwarded junk after value", remote: "10.0.0.1", forwarded: `for="81.2.69.142"x, for=10.0.0.2`, want: "10.0.0.2"},
		{name: "Forwarded garbage element resynchronises", remote: "10.0.0.1", forwarded: `for=81.2.69.142, @@"x,y"@@, for=10.0.0.2`, want: "10.0.0.2"},
		{name: "Forwarded garbage left of the client", remote: "10.0.0.1", forwarded: `@@@, for=81.2.69.142, for=10.0.0.2`, want: "81.2.69.142"},
		{name: "Forwarded hops beyond the bound are ignored", remote: "10.0.0.1",
			forwarded: many(100, func(i int) string { return fmt.Sprintf("for=1.1.1.%d", i) }) + ", for=81.2.69.142",
			want:      "81.2.69.142"},
		{name: "Forwarded huge header", remote: "10.0.0.1",
			forwarded: strings.Repeat("for=1.1.1.1;proto=https, ", 5000) + "for=81.2.69.142, for=10.0.0.2",
			want:      "81.2.69.142"},
		// A client's own Forwarded header, broken however it likes, cannot hide the element a
		// trusted proxy appended to it: elements are found from the right.
		{name: "Forwarded open quote from the client, proxy appends on the same line", remote: "10.0.0.1",
			forwarded: `for="89.160.20.1` + ", for=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded open quote from the client, proxy appends a line", remote: "10.0.0.1",
			forwarded: `for="89.160.20.1` + "\nfor=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded lone quote from the client", remote: "10.0.0.1",
			forwarded: `for="` + ", for=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded open quote, then two proxies", remote: "10.0.0.1",
			forwarded: `for="89.160.20.1` + ", for=81.2.69.142, for=10.0.0.2", want: "81.2.69.142"},
		{name: "Forwarded open quote, then two proxies on two lines", remote: "10.0.0.1",
			forwarded: `for="89.160.20.1, for=81.2.69.142` + "\nfor=10.0.0.2", want: "81.2.69.142"},
		{name: "Forwarded open quote, quoted IPv6 appended", remote: "10.0.0.1",
			forwarded: `for="` + `, for="[2001:db8:de::1]:5", for=10.0.0.2`, want: "2001:db8:de::1"},
		{name: "Forwarded open quote in a parameter of the client", remote: "10.0.0.1",
			forwarded: `for=89.160.20.1;host="a` + ", for=81.2.69.142;proto=https", want: "81.2.69.142"},
		// Read from the left, the client's quote would pair with the first quote of the proxy's.
		{name: "Forwarded open quote pairing with the proxy's quotes from the left", remote: "10.0.0.1",
			forwarded: `x="` + `, for=81.2.69.142, for="[fd00::3]:4711"`, want: "81.2.69.142"},
		{name: "Forwarded quotes in the middle of the client's part", remote: "10.0.0.1",
			forwarded: `for=1.1.1.1;x="a,b", y="c, for="d` + ", for=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded balanced client quote hiding a for", remote: "10.0.0.1",
			forwarded: `x="a, for=89.160.20.1"` + ", for=81.2.69.142, for=10.0.0.2", want: "81.2.69.142"},
		{name: "Forwarded escaped quote ending the client's part", remote: "10.0.0.1",
			forwarded: `for="89.160.20.1\"` + ", for=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded backslash ending the client's part", remote: "10.0.0.1",
			forwarded: `for="89.160.20.1\` + `, for="81.2.69.142"`, want: "81.2.69.142"},
		{name: "Forwarded escaped quote in the proxy's element", remote: "10.0.0.1",
			forwarded: `for="` + `, for=81.2.69.142;ext="a\"b,c", for=10.0.0.2`, want: "81.2.69.142"},
		{name: "Forwarded escaped backslash before the proxy's closing quote", remote: "10.0.0.1",
			forwarded: `for="` + `, for=81.2.69.142;ext="a\\", for=10.0.0.2`, want: "81.2.69.142"},
		{name: "Forwarded escaped backslash and quote in the proxy's element", remote: "10.0.0.1",
			forwarded: `for="` + `, for=81.2.69.142;ext="\\\"\\", for=10.0.0.2`, want: "81.2.69.142"},
		{name: "Forwarded escaped quote cannot open a string", remote: "10.0.0.1",
			forwarded: `for=81.2.69.142, x=\"a", for=10.0.0.2`, want: "10.0.0.2"},
		{name: "Forwarded quote with no opening, rightmost", remote: "10.0.0.1",
			forwarded: `for=81.2.69.142, for=1.1.1.1"`, want: "10.0.0.1"},
		{name: "Forwarded huge quoted garbage from the client", remote: "10.0.0.1",
			forwarded: `for="` + strings.Repeat("a, for=1.1.1.1, ", 2000) + ", for=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded many unmatched quotes", remote: "10.0.0.1",
			forwarded: strings.Repeat(`\"`, 8000) + ", for=81.2.69.142", want: "81.2.69.142"},
		{name: "Forwarded window cut inside a quoted-string", remote: "10.0.0.1",
			forwarded: `x="` + strings.Repeat("y", 20000) + `, for=1.1.1.1", for=81.2.69.142`, want: "81.2.69.142"},
	}
}

func TestResolve(t *testing.T) {
	c := clientip.New(trustedForTests(t), clientip.Any)
	for _, tc := range resolveCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := c.Resolve(addr(tc.remote), lines(tc.xff), lines(tc.forwarded))
			if diff := cmp.Diff(addr(tc.want), got, addrs()); diff != "" {
				t.Errorf("Resolve(%q, xff=%q, forwarded=%q) mismatch (-want +got):\n%s", tc.remote, tc.xff, tc.forwarded, diff)
			}
		})
	}
}

func TestResolveNoTrustedProxies(t *testing.T) {
	for _, c := range []*clientip.Resolver{clientip.New(nil, clientip.Any), nil} {
		got := c.Resolve(addr("10.0.0.1"), []string{"81.2.69.142"}, nil)
		if diff := cmp.Diff(addr("10.0.0.1"), got, addrs()); diff != "" {
			t.Errorf("mismatch (-want +got):\n%s", diff)
		}
	}
}

func TestFromRequest(t *testing.T) {
	c := clientip.New(trustedForTests(t), clientip.Any)
	tests := []struct {
		name       string
		remoteAddr string
		header     http.Header
		want       string
	}{
		{name: "untrusted", remoteAddr: "81.2.69.142:50000", header: http.Header{"X-Forwarded-For": {"89.160.20.1"}}, want: "81.2.69.142"},
		{name: "trusted with XFF", remoteAddr: "10.0.0.1:50000", header: http.Header{"X-Forwarded-For": {"1.1.1.1, 81.2.69.142"}}, want: "81.2.69.142"},
		{name: "trusted with XFF lines", remoteAddr: "10.0.0.1:50000", header: http.Header{"X-Forwarded-For": {"81.2.69.142", "10.0.0.2"}}, want: "81.2.69.142"},
		{name: "trusted with Forwarded", remoteAddr: "[::1]:50000", header: http.Header{"Forwarded": {`for="[2001:db8:de::1]:1"`}}, want: "2001:db8:de::1"},
		{name: "trusted without headers", remoteAddr: "[::1]:50000", want: "::1"},
		{name: "dual-stack listener", remoteAddr: "[::ffff:10.0.0.1]:50000", header: http.Header{"X-Forwarded-For": {"81.2.69.142"}}, want: "81.2.69.142"},
		{name: "zone in remote", remoteAddr: "[fe80::1%eth0]:50000", want: "fe80::1"},
		{name: "no port", remoteAddr: "81.2.69.142", want: "81.2.69.142"},
		{name: "bracketed, no port", remoteAddr: "[2001:db8:de::1]", want: "2001:db8:de::1"},
		{name: "unix socket", remoteAddr: "@", header: http.Header{"X-Forwarded-For": {"81.2.69.142"}}, want: ""},
		{name: "empty", remoteAddr: "", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
			r.RemoteAddr = tc.remoteAddr
			if tc.header != nil {
				r.Header = tc.header
			}
			if diff := cmp.Diff(addr(tc.want), c.FromRequest(r), addrs()); diff != "" {
				t.Errorf("FromRequest mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// Many trusted prefixes take another path than a few; both must agree.
func TestResolveManyTrustedPrefixes(t *testing.T) {
	trusted := trustedForTests(t)
	for i := range 20 {
		trusted = append(trusted, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24))
	}
	trusted = append(trusted, netip.MustParsePrefix("::ffff:192.168.0.0/112")) // mapped form
	c := clientip.New(trusted, clientip.Any)
	for _, tc := range resolveCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := c.Resolve(addr(tc.remote), lines(tc.xff), lines(tc.forwarded))
			if diff := cmp.Diff(addr(tc.want), got, addrs()); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
	got := c.Resolve(addr("172.16.19.1"), []string{"81.2.69.142, 192.168.1.1, 172.16.3.3"}, nil)
	if diff := cmp.Diff(addr("81.2.69.142"), got, addrs()); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

// TestFromRequestHeaderChoice checks that only the configured header is believed: a proxy that
// appends X-Forwarded-For passes the client's own Forwarded header through untouched.
func TestFromRequestHeaderChoice(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		name   string
		header clientip.Header
		want   string
	}{
		{"x-forwarded-for", clientip.XForwardedFor, "81.2.69.142"},
		{"forwarded", clientip.Forwarded, "89.160.20.112"},
		{"any prefers forwarded", clientip.Any, "89.160.20.112"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "10.1.2.3:4000"
			r.Header.Set("X-Forwarded-For", "81.2.69.142")
			r.Header.Set("Forwarded", "for=89.160.20.112")
			if got := clientip.New(trusted, tc.header).FromRequest(r); got.String() != tc.want {
				t.Errorf("client = %s, want %s", got, tc.want)
			}
		})
	}
}
