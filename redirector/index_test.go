package redirector

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// hostile is text that would run, or break out of its element or attribute, if it reached the
// page unescaped.
const hostile = `"><script>alert(1)</script><img src=x onerror=alert(2)>'`

// sampleIndex is a registry with three mirrors, a visitor in Germany and demand data.
func sampleIndex(calls *[]netip.Addr) IndexInfo {
	return IndexInfo{
		Name: "images.example.dev",
		Images: []IndexImage{
			{Repository: "app", Tag: "1.0", Tags: []string{"1.*", "latest"}},
			{Repository: "tools/lint"},
		},
		Upstream: "https://registry.example.com/v2/acme/",
		Mirrors: []IndexMirror{
			{Name: "eu-west", Provider: "gcs", Country: "DE", Continent: "EU", Location: "50.10, 8.70"},
			{Name: "us-east", Provider: "s3", Country: "US", Continent: "NA", Location: "38.90, -77.40"},
			{Name: "br-south", Provider: "http", Country: "BR", Continent: "SA"},
		},
		Version: "v1.2.3",
		Visitor: func(a netip.Addr) IndexVisitor {
			if calls != nil {
				*calls = append(*calls, a)
			}
			return IndexVisitor{
				Addr: a.String(), Located: true, Country: "DE", Continent: "EU", Coords: "50.11,8.68", ASN: 64500,
				Mirror: "eu-west", Reason: "country", Why: "the mirror is in your country",
				Ranks: []IndexRank{
					{Mirror: "eu-west", Position: 1, Tier: "country", DistanceKm: 2},
					{Mirror: "us-east", Position: 2, Tier: "distance", DistanceKm: 6512.4},
					{Mirror: "br-south", Excluded: "only for BR"},
				},
			}
		},
		Health: func() []IndexHealth {
			return []IndexHealth{
				{Mirror: "eu-west", OK: true, Text: "healthy"},
				{Mirror: "us-east", OK: false, Text: "set aside after failures"},
			}
		},
		Misses: func() map[string]uint64 { return map[string]uint64{"us-east": 17} },
	}
}

func TestIndexPage(t *testing.T) {
	type req struct {
		method, host, xff string
	}
	for _, tc := range []struct {
		name    string
		info    IndexInfo
		req     req
		want    []string
		notWant []string
	}{
		{
			name: "zero value: generic text",
			want: []string{
				"<title>Container registry</title>",
				"docker pull REGISTRY/IMAGE:TAG",
				"oci-proxy (development build)",
			},
			notWant: []string{`id="you"`, `id="mirrors"`, "Missed"},
		},
		{
			name: "everything",
			info: sampleIndex(nil),
			want: []string{
				"<title>images.example.dev</title>",
				`<h1 id="registry">images.example.dev</h1>`,
				"<code>docker pull images.example.dev/app:1.0</code>",
				"<code>docker pull images.example.dev/tools/lint</code>",
				"<code>1.*</code>, <code>latest</code>",
				`<dd id="visitor-addr"><code>192.0.2.1</code></dd>`,
				"country DE, continent EU, at 50.11,8.68, AS64500",
				`<strong>eu-west</strong>, reason <code id="visitor-reason">country</code>: the mirror is in your country`,
				"no mirror was asked anything",
				`<tr class="chosen" data-mirror="eu-west">`,
				"1st, country, 2 km (chosen)",
				"2nd, distance, 6,512 km</td>",
				`<span class="muted">only for BR</span>`,
				`<td class="bad">set aside after failures</td>`,
				`<td class="ok">healthy</td>`,
				"DE, EU, at 50.10, 8.70",
				`<td class="misses">17</td>`,
				`<td class="misses">0</td>`,
				"<code>https://registry.example.com/v2/acme/</code>",
				"oci-proxy v1.2.3",
			},
		},
		{
			name: "no demand data: no column",
			info: func() IndexInfo { i := sampleIndex(nil); i.Misses = nil; return i }(),
			want: []string{`data-mirror="us-east"`},
			notWant: []string{
				"Missed", `class="misses"`,
			},
		},
		{
			name:    "no visitor function: no visitor section, no ranks",
			info:    func() IndexInfo { i := sampleIndex(nil); i.Visitor = nil; return i }(),
			want:    []string{`<tr data-mirror="eu-west">`},
			notWant: []string{`id="you"`, "For you", `class="chosen"`},
		},
		{
			name: "hostile Host and X-Forwarded-For are not echoed",
			info: sampleIndex(nil),
			req:  req{host: "evil.example" + hostile, xff: hostile},
			want: []string{"docker pull images.example.dev/app:1.0", "<code>192.0.2.1</code>"},
			notWant: []string{
				"evil.example", "<script", "<img", "alert(",
			},
		},
		{
			name: "hostile values everywhere are escaped",
			info: IndexInfo{
				Name:     "images.example.dev" + hostile,
				Images:   []IndexImage{{Repository: hostile, Tag: hostile, Tags: []string{hostile}}},
				Upstream: hostile,
				Mirrors:  []IndexMirror{{Name: hostile, Provider: hostile, Country: hostile, Location: hostile}},
				Routes:   []string{hostile},
				Version:  hostile,
				Visitor: func(netip.Addr) IndexVisitor {
					return IndexVisitor{Addr: hostile, Located: true, Country: hostile, Networks: []string{hostile},
						Mirror: hostile, Reason: hostile, Why: hostile,
						Ranks: []IndexRank{{Mirror: hostile, Excluded: hostile}}}
				},
				Health: func() []IndexHealth { return []IndexHealth{{Mirror: hostile, Text: hostile}} },
				Misses: func() map[string]uint64 { return map[string]uint64{hostile: 1} },
			},
			want: []string{
				`&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&#39;`,
				`data-mirror="&#34;&gt;&lt;script&gt;`,
			},
			notWant: []string{"<script", "<img", "alert(2)>"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := New(Options{Upstream: newTable(t), Index: tc.info})
			method := tc.req.method
			if method == "" {
				method = http.MethodGet
			}
			r := httptest.NewRequest(method, "/", nil)
			if tc.req.host != "" {
				r.Host = tc.req.host
			}
			if tc.req.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.req.xff)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			checkIndexHeaders(t, rec)
			body := rec.Body.String()
			for _, s := range tc.want {
				if !strings.Contains(body, s) {
					t.Errorf("page lacks %q", s)
				}
			}
			for _, s := range tc.notWant {
				if strings.Contains(body, s) {
					t.Errorf("page contains %q", s)
				}
			}
			if t.Failed() {
				t.Logf("page:\n%s", body)
			}
		})
	}
}

func checkIndexHeaders(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200", rec.Code)
	}
	for k, v := range map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
		"Content-Length":         strconv.Itoa(rec.Body.Len()),
	} {
		if got := rec.Header().Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Errorf("Content-Security-Policy = %q: want no scripts from anywhere", csp)
	}
}

// TestIndexVisitorAddress checks that the page asks about the address ClientAddr finds (the
// trusted-proxy logic), once per visit, and answers HEAD with the headers of GET and no body.
func TestIndexVisitorAddress(t *testing.T) {
	var calls []netip.Addr
	client := netip.MustParseAddr("89.160.20.112")
	h := New(Options{
		Upstream:   newTable(t),
		Index:      sampleIndex(&calls),
		ClientAddr: func(*http.Request) netip.Addr { return client },
	})
	get := httptest.NewRecorder()
	h.ServeHTTP(get, httptest.NewRequest(http.MethodGet, "/", nil))
	head := httptest.NewRecorder()
	h.ServeHTTP(head, httptest.NewRequest(http.MethodHead, "/", nil))
	if diff := cmp.Diff([]netip.Addr{client, client}, calls, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Visitor called with (-want +got):\n%s", diff)
	}
	if !strings.Contains(get.Body.String(), "<code>89.160.20.112</code>") {
		t.Errorf("page does not show the client's address")
	}
	if head.Code != http.StatusOK || head.Body.Len() != 0 {
		t.Errorf("HEAD: status %d, %d body bytes; want 200 and none", head.Code, head.Body.Len())
	}
	for _, k := range []string{"Content-Type", "Content-Length", "Cache-Control"} {
		if g, h := get.Header().Get(k), head.Header().Get(k); g != h {
			t.Errorf("%s: GET %q, HEAD %q", k, g, h)
		}
	}

	post := httptest.NewRecorder()
	h.ServeHTTP(post, httptest.NewRequest(http.MethodPost, "/", nil))
	if post.Code != http.StatusMethodNotAllowed || post.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: status %d, Allow %q; want 405 and GET, HEAD", post.Code, post.Header().Get("Allow"))
	}
	if len(calls) != 2 {
		t.Errorf("POST asked about the visitor")
	}
}

// TestIndexPartsMakeThePage checks that the parts rendered apart (head and tail once, the live
// part per visit) make exactly the page that one template execution renders.
func TestIndexPartsMakeThePage(t *testing.T) {
	for name, info := range map[string]IndexInfo{
		"zero":      {},
		"sample":    sampleIndex(nil),
		"no-demand": func() IndexInfo { i := sampleIndex(nil); i.Misses = nil; i.Health = nil; return i }(),
	} {
		t.Run(name, func(t *testing.T) {
			p := newIndexPage(info)
			rec := httptest.NewRecorder()
			p.serve(rec, httptest.NewRequest(http.MethodGet, "/", nil), netip.MustParseAddr("192.0.2.1"))
			if diff := cmp.Diff(string(p.render(netip.MustParseAddr("192.0.2.1"))), rec.Body.String()); diff != "" {
				t.Errorf("served page differs from the one-piece render (-render +served):\n%s", diff)
			}
		})
	}
}

func TestKm(t *testing.T) {
	for d, want := range map[float64]string{0: "0 km", 2.4: "2 km", 999.6: "1,000 km", 6512.4: "6,512 km", 16500: "16,500 km", 1234567: "1,234,567 km"} {
		if got := km(d); got != want {
			t.Errorf("km(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int]string{1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 13: "13th", 21: "21st", 22: "22nd", 111: "111th"} {
		if got := ordinal(n); got != want {
			t.Errorf("ordinal(%d) = %q, want %q", n, got, want)
		}
	}
}

// textEverywhere is sampleIndex with s in every text the page shows (s must not be empty, so
// that the same elements are rendered whatever it is).
func textEverywhere(s string) IndexInfo {
	return IndexInfo{
		Name:     s,
		Images:   []IndexImage{{Repository: s, Tag: s, Tags: []string{s, s}}},
		Upstream: s,
		Mirrors:  []IndexMirror{{Name: s, Provider: s, Country: s, Continent: s, Location: s}, {Name: "m2"}},
		Routes:   []string{s},
		Version:  s,
		Visitor: func(netip.Addr) IndexVisitor {
			return IndexVisitor{Addr: s, Located: true, Country: s, Continent: s, Coords: s, ASN: 1, Networks: []string{s},
				Mirror: s, Reason: s, Why: s,
				Ranks: []IndexRank{{Mirror: s, Position: 1, Tier: s, DistanceKm: 1}, {Mirror: "m2", Excluded: s}}}
		},
		Health: func() []IndexHealth { return []IndexHealth{{Mirror: s, OK: true, Text: s}, {Mirror: "m2", Text: s}} },
		Misses: func() map[string]uint64 { return map[string]uint64{s: 1} },
	}
}

// FuzzIndexPage puts the same text into every field of the page and into the request's Host and
// X-Forwarded-For: whatever it is, the page has exactly the markup it has for plain text (each
// '<', '>' and '"' of the text is escaped), so no text can open an element or leave an
// attribute.
func FuzzIndexPage(f *testing.F) {
	for _, s := range []string{hostile, "x", "</td></tr></table>", `" onload="x`, "\x00\xff<", "{{.Name}}", "&lt;", "<!--", "]]>"} {
		f.Add(s)
	}
	table := newTable(f)
	markup := func(info IndexInfo, host, xff string) (string, map[rune]int) {
		h := New(Options{Upstream: table, Index: info})
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = host
		r.Header.Set("X-Forwarded-For", xff)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		counts := map[rune]int{}
		for _, c := range rec.Body.String() {
			if c == '<' || c == '>' || c == '"' {
				counts[c]++
			}
		}
		return rec.Body.String(), counts
	}
	_, want := markup(textEverywhere("plain"), "example.com", "192.0.2.9")
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" {
			s = "-"
		}
		body, got := markup(textEverywhere(s), s, s)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("markup characters differ from plain text's (-plain +got):\n%s\n%s", diff, body)
		}
	})
}
