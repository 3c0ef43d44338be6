package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/happy-turtle/oci-proxy/oci"
)

// MaxPageSize bounds n in a rewritten Link: the largest page redirector accepts, so that the
// client's next request is not refused.
const MaxPageSize = 100000

// maxLinkLength bounds a Link header worth parsing; a next-page link is well under 1 KiB.
const maxLinkLength = 8 << 10

// tagList is the body of tags/list. Fields other registries add are dropped.
type tagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// tagsAnswer passes a tag list on under the client's name, with its next-page Link pointed at
// the proxy. A Link that cannot be rewritten is dropped: the client then sees one page rather
// than a link to somewhere else.
func (p *Proxy) tagsAnswer(q *Request, resp *http.Response, body []byte) *answer {
	var l tagList
	if err := json.Unmarshal(body, &l); err != nil {
		return refusedAnswer(codeUnknown, msgBadTagList, fmt.Errorf("GET %s: %w", q.URL, err))
	}
	l.Name = q.ClientName
	if l.Tags == nil {
		l.Tags = []string{}
	}
	out, err := json.Marshal(l)
	if err != nil {
		return refusedAnswer(codeUnknown, msgBadTagList, fmt.Errorf("GET %s: encode: %w", q.URL, err))
	}
	a := bodyAnswer(resp, out)
	a.header["Content-Type"] = []string{"application/json"}
	copyHeader(a.header, resp.Header, "Etag")
	if links := resp.Header.Values("Link"); len(links) > 0 {
		link := strings.Join(links, ", ")
		if next, ok := RewriteLink(link, q.ClientName); ok {
			a.header["Link"] = []string{next}
		} else {
			p.log.Debug("dropping a Link header that is not a usable next page",
				"repository", q.ClientName, "link", link)
		}
	}
	return a
}

// RewriteLink turns the upstream's next-page Link header of a tag list into the client's own:
// `</v2/<clientName>/tags/list?n=N&last=T>; rel="next"`. Of the upstream's link it takes only the
// first link-value with rel "next", whose target (relative or absolute, any host) must be a
// tags/list path with a `last` tag and optionally a page size `n`; everything else (host, path,
// other parameters) is dropped. ok is false when there is no such link, when n is not an integer
// from 1 to MaxPageSize, last not a valid tag, either repeated, or clientName not a valid
// repository name: such a Link must be dropped, never passed on.
//
// A link without `last` is refused rather than kept with only n: registries that page by an
// opaque token of their own would send the client back to the first page forever.
func RewriteLink(link, clientName string) (string, bool) {
	if len(link) > maxLinkLength || oci.ValidateName(clientName) != nil {
		return "", false
	}
	target, ok := nextTarget(link)
	if !ok {
		return "", false
	}
	u, err := url.Parse(target)
	if err != nil || u.Opaque != "" || !strings.HasSuffix(u.Path, "/tags/list") {
		return "", false
	}
	if u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" {
		return "", false
	}
	vals, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "", false
	}
	lasts := vals["last"]
	if len(lasts) != 1 || oci.ValidateTag(lasts[0]) != nil {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(clientName) + len(lasts[0]) + 48)
	b.WriteString("</v2/")
	b.WriteString(clientName)
	b.WriteString("/tags/list?")
	if ns, ok := vals["n"]; ok {
		n, ok := pageSize(ns)
		if !ok {
			return "", false
		}
		b.WriteString("n=")
		b.WriteString(strconv.Itoa(n))
		b.WriteByte('&')
	}
	b.WriteString("last=")
	b.WriteString(lasts[0])
	b.WriteString(`>; rel="next"`)
	return b.String(), true
}

// pageSize accepts one n of decimal digits only (no sign, no space) from 1 to MaxPageSize.
func pageSize(ns []string) (int, bool) {
	if len(ns) != 1 || ns[0] == "" || len(ns[0]) > 10 {
		return 0, false
	}
	for i := 0; i < len(ns[0]); i++ {
		if c := ns[0][i]; c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(ns[0])
	if err != nil || n < 1 || n > MaxPageSize {
		return 0, false
	}
	return n, true
}

// nextTarget returns the target of the first link-value with relation type "next" in a Link
// header (RFC 8288: `<target>; param=value; param="quoted", <target2>; ...`). A header that does
// not follow that grammar up to the link found is refused whole.
func nextTarget(h string) (string, bool) {
	i := 0
	skip := func() {
		for i < len(h) && (h[i] == ' ' || h[i] == '\t') {
			i++
		}
	}
	for {
		skip()
		if i == len(h) || h[i] != '<' {
			return "", false
		}
		end := strings.IndexByte(h[i:], '>')
		if end < 0 {
			return "", false
		}
		target := h[i+1 : i+end]
		i += end + 1
		next := false
		for {
			skip()
			if i == len(h) || h[i] == ',' {
				break
			}
			if h[i] != ';' {
				return "", false
			}
			i++
			skip()
			name := token(h[i:])
			if name == "" {
				return "", false
			}
			i += len(name)
			skip()
			var value string
			if i < len(h) && h[i] == '=' {
				i++
				skip()
				v, n, ok := paramValue(h[i:])
				if !ok {
					return "", false
				}
				value = v
				i += n
			}
			if strings.EqualFold(name, "rel") && hasRel(value, "next") {
				next = true
			}
		}
		if next {
			return target, true
		}
		if i == len(h) {
			return "", false
		}
		i++ // the ',' between link-values
	}
}

// token returns the leading RFC 9110 token of s.
func token(s string) string {
	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	return s[:i]
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// paramValue reads a token or a quoted string at the start of s, returning its value and the
// bytes it took.
func paramValue(s string) (string, int, bool) {
	if s == "" || s[0] != '"' {
		t := token(s)
		return t, len(t), t != ""
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), i + 1, true
		case '\\':
			if i+1 == len(s) {
				return "", 0, false
			}
			i++
			b.WriteByte(s[i])
		default:
			if c < 0x20 && c != '\t' || c == 0x7f {
				return "", 0, false
			}
			b.WriteByte(c)
		}
	}
	return "", 0, false
}

// hasRel reports whether a rel value (space-separated relation types) includes rel.
func hasRel(value, rel string) bool {
	for t := range strings.FieldsSeq(value) {
		if strings.EqualFold(t, rel) {
			return true
		}
	}
	return false
}
