// Package clientip finds a request's client address behind a chain of trusted proxies, from the
// one forwarding header those proxies write (X-Forwarded-For or RFC 7239 Forwarded), walked from
// the right. It does not locate the address (package geo does) and believes no header from a
// connection it does not trust.
package clientip

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/happy-turtle/oci-proxy/geo"
)

// Bounds on what a request's forwarding headers can make us do. Only the rightmost hops can have
// been written by our own proxies; everything further left came from the client and is worth
// nothing, so dropping it never changes an honest answer.
const (
	// MaxHops is how many hops, counted from the right, are considered.
	MaxHops = 64
	// maxHeaderBytes is how much of the headers, counted from the right, is parsed. 64 hops of
	// Forwarded elements with quoted IPv6 addresses, ports and by=/proto= fit comfortably.
	maxHeaderBytes = 16 << 10
)

// Resolver finds the address of the client behind a chain of trusted proxies. It is immutable
// and safe for concurrent use.
type Resolver struct {
	header Header
	// A handful of prefixes, the usual case, are faster to scan than to search; a long list (a
	// CDN's published ranges, say) goes into a trie.
	few  []netip.Prefix
	many *geo.NetworkTable
}

// fewTrusted is where a scan stops beating the trie.
const fewTrusted = 8

// Header says which forwarding header the trusted proxies write.
type Header uint8

const (
	// XForwardedFor believes X-Forwarded-For only: what nearly every load balancer appends. A
	// Forwarded header is then the client's own words and is ignored.
	XForwardedFor Header = iota
	// Forwarded believes RFC 7239 Forwarded only.
	Forwarded
	// Any uses Forwarded when it names a for= node, X-Forwarded-For otherwise. Safe only
	// when the proxies strip or overwrite both headers: a proxy that appends to one passes the
	// client's version of the other through.
	Any
)

// New trusts the forwarding header h of connections from the given prefixes. With no
// prefixes, headers are never trusted and the connection's address is always the client.
func New(trusted []netip.Prefix, h Header) *Resolver {
	c := Resolver{header: h}
	var rules []geo.NetworkRule
	for _, p := range trusted {
		if q, ok := geo.NormalizePrefix(p); ok {
			c.few = append(c.few, q)
			rules = append(rules, geo.NetworkRule{Prefix: q, Tag: "trusted"})
		}
	}
	if len(c.few) > fewTrusted {
		c.few, c.many = nil, geo.NewNetworkTable(rules)
	}
	return &c
}

// FromRequest returns the client address of r. It returns the zero Addr only when r.RemoteAddr is
// not an address (as for some unix-socket listeners).
func (c *Resolver) FromRequest(r *http.Request) netip.Addr {
	remote := parseRemoteAddr(r.RemoteAddr)
	if !remote.IsValid() || !c.isTrusted(remote) {
		return remote
	}
	var xff, fwd []string
	if c.header != Forwarded {
		xff = r.Header.Values("X-Forwarded-For")
	}
	if c.header != XForwardedFor {
		fwd = r.Header.Values("Forwarded")
	}
	return c.Resolve(remote, xff, fwd)
}

func parseRemoteAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return geo.NormalizeAddr(ap.Addr())
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return geo.NormalizeAddr(a)
	}
	return netip.Addr{}
}

func (c *Resolver) isTrusted(a netip.Addr) bool {
	if c == nil {
		return false
	}
	if c.many != nil {
		return c.many.Lookup(a) != nil
	}
	for _, p := range c.few {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Resolve returns the client address for a connection from remote that carried the given
// X-Forwarded-For and Forwarded header lines.
//
// Headers count only when remote is trusted. Forwarded (RFC 7239) is used when it names at least
// one for= node, X-Forwarded-For otherwise. Hops are walked from the right, skipping trusted ones;
// the first untrusted hop is the client. A hop that is not an address (garbage, "unknown", an
// obfuscated identifier, a Forwarded element without for=) ends the walk: the client is then the
// last address seen right of it, or remote, because anything further left cannot be vouched for.
// When every hop is trusted the leftmost one is the client.
func (c *Resolver) Resolve(remote netip.Addr, xff, forwarded []string) netip.Addr {
	remote = geo.NormalizeAddr(remote)
	if !remote.IsValid() || !c.isTrusted(remote) {
		return remote
	}
	var h hops
	parseForwarded(&h, forwarded)
	if !h.hasFor {
		if h.n > 0 {
			h = hops{}
		}
		parseXFF(&h, xff)
	}
	last := remote
	for i := range h.len() {
		hop := h.fromRight(i)
		if !hop.IsValid() {
			return last
		}
		if !c.isTrusted(hop) {
			return hop
		}
		last = hop
	}
	return last
}

// hops keeps the rightmost MaxHops hops seen, in a ring, so that arbitrarily long headers cost
// no allocation. An invalid Addr marks a hop that is not an address.
type hops struct {
	ring   [MaxHops]netip.Addr
	n      int  // hops pushed, possibly more than MaxHops
	hasFor bool // a Forwarded element named a for= node
}

func (h *hops) push(a netip.Addr) {
	h.ring[h.n%MaxHops] = a
	h.n++
}

func (h *hops) len() int { return min(h.n, MaxHops) }

// fromRight returns the i-th hop counting from the right, 0 being the rightmost.
func (h *hops) fromRight(i int) netip.Addr { return h.ring[(h.n-1-i)%MaxHops] }

// tail returns the header lines to parse: the rightmost maxHeaderBytes of them. When a line has to
// be cut, it is cut at an element boundary and a malformed hop stands for the part dropped, so the
// walk stops there instead of treating the first kept element as the leftmost hop of the chain.
func tail(lines []string) (first int, cut string, truncated bool) {
	total := 0
	for i := len(lines) - 1; i >= 0; i-- {
		total += len(lines[i]) + 1
		if total > maxHeaderBytes {
			keep := lines[i][len(lines[i])-(maxHeaderBytes-(total-len(lines[i])-1)):]
			if j := strings.IndexByte(keep, ','); j >= 0 {
				return i, keep[j+1:], true
			}
			return i, "", true
		}
	}
	return 0, "", false
}

// parseXFF and parseForwarded repeat the same few lines on purpose: sharing them through a function
// value would make the hop ring escape to the heap, one 1.8 KB allocation per request.
func parseXFF(h *hops, lines []string) {
	first, cut, truncated := tail(lines)
	if truncated {
		h.push(netip.Addr{})
		parseXFFLine(h, cut)
		first++
	}
	for _, l := range lines[first:] {
		parseXFFLine(h, l)
	}
}

func parseXFFLine(h *hops, l string) {
	for len(l) > 0 {
		elem, rest, _ := strings.Cut(l, ",")
		l = rest
		elem = strings.TrimSpace(elem)
		if elem == "" {
			// "a,,b" or a trailing comma carries no hop; it is not garbage either.
			continue
		}
		h.push(parseNode(elem))
	}
}

// parseNode reads one hop: an address, optionally with a port, IPv6 in brackets when it has one.
// Anything else, including "unknown" and obfuscated identifiers, is the invalid Addr. The shape is
// checked before parsing because a failed netip parse allocates its error, and ports are common.
func parseNode(s string) netip.Addr {
	host := s
	if s != "" && s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 || !validPort(s[end+1:]) {
			return netip.Addr{}
		}
		host = s[1:end]
		if strings.IndexByte(host, ':') < 0 {
			return netip.Addr{} // brackets are for IPv6 only
		}
	} else if i := strings.IndexByte(s, ':'); i >= 0 && strings.IndexByte(s[i+1:], ':') < 0 {
		// Exactly one colon: IPv4 with a port.
		if !validPort(s[i:]) {
			return netip.Addr{}
		}
		host = s[:i]
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !validZone(a.Zone()) {
		return netip.Addr{}
	}
	return geo.NormalizeAddr(a)
}

// validZone accepts what a proxy on the client's link may write after '%': an interface name or
// index. netip takes any bytes there, spaces and quotes included, which can only be garbage in a
// header. The zone is dropped afterwards either way.
func validZone(z string) bool {
	for i := 0; i < len(z); i++ {
		c := z[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validPort accepts "", ":" followed by up to five digits, or an RFC 7239 obfuscated port
// (":_abc"), which says nothing about the address before it.
func validPort(s string) bool {
	if s == "" {
		return true
	}
	if s[0] != ':' || len(s) < 2 {
		return false
	}
	p := s[1:]
	if p[0] == '_' {
		for i := 1; i < len(p); i++ {
			if c := p[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return false
			}
		}
		return true
	}
	if len(p) > 5 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

// parseForwarded pushes one hop per Forwarded element:
//
//	Forwarded = 1#forwarded-element
//	forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
//	forwarded-pair = token "=" ( token / quoted-string )
//
// An element whose syntax is broken, or whose for= is missing, repeated or not an address, is a
// malformed hop. The header is split by hand because a quoted-string may contain ',' and ';'.
func parseForwarded(h *hops, lines []string) {
	first, cut, truncated := tail(lines)
	if truncated {
		h.push(netip.Addr{})
		parseForwardedLine(h, cut)
		first++
	}
	for _, l := range lines[first:] {
		parseForwardedLine(h, l)
	}
}

func parseForwardedLine(h *hops, l string) {
	p := fwdParser{s: l}
	for !p.done() {
		e, ok := p.element()
		if e.sawFor {
			h.hasFor = true
		}
		switch {
		case !ok:
			h.push(netip.Addr{})
			p.skipElement()
		case e.empty:
			// "a, ,b" or a trailing comma carries no hop; it is not garbage either.
		default:
			// Without for= the element still stands for a hop, one we know nothing about.
			h.push(e.addr)
		}
	}
}

type fwdParser struct {
	s string
	i int
}

// fwdElement is what one Forwarded element says about its hop.
type fwdElement struct {
	addr   netip.Addr // invalid unless for= names an address
	sawFor bool
	empty  bool // no pairs at all
}

func (p *fwdParser) done() bool {
	p.skipSpace()
	return p.i >= len(p.s)
}

func (p *fwdParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// skipElement resynchronises after an error at the next ',' outside a quoted-string.
func (p *fwdParser) skipElement() {
	inQuote := false
	for ; p.i < len(p.s); p.i++ {
		switch c := p.s[p.i]; {
		case inQuote && c == '\\':
			p.i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == ',':
			p.i++
			return
		}
	}
}

// element parses one element up to and including its ','. ok is false on a syntax error, with
// the parser left inside the element.
func (p *fwdParser) element() (e fwdElement, ok bool) {
	e.empty = true
	for {
		p.skipSpace()
		if p.i >= len(p.s) {
			return e, true
		}
		switch p.s[p.i] {
		case ',':
			p.i++
			return e, true
		case ';':
			p.i++
			continue
		}
		e.empty = false
		name := p.token()
		if name == "" || p.i >= len(p.s) || p.s[p.i] != '=' {
			return e, false
		}
		p.i++
		var val string
		if p.i < len(p.s) && p.s[p.i] == '"' {
			if val, ok = p.quoted(); !ok {
				return e, false
			}
		} else if val = p.token(); val == "" {
			return e, false
		}
		if strings.EqualFold(name, "for") {
			if e.sawFor {
				return e, false // two for= in one element: neither can be believed
			}
			e.sawFor = true
			e.addr = parseForNode(val)
		}
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] != ';' && p.s[p.i] != ',' {
			return e, false
		}
	}
}

// token reads RFC 7230 tchars.
func (p *fwdParser) token() string {
	start := p.i
	for p.i < len(p.s) && isTchar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// quoted reads a quoted-string. The unescaped value is returned only when it needs no copying,
// which is always the case for a node ("[2001:db8::1]:80"); a value with backslash escapes is
// reported as an empty string, which no node can be.
func (p *fwdParser) quoted() (string, bool) {
	p.i++ // opening quote
	start := p.i
	escaped := false
	for p.i < len(p.s) {
		switch c := p.s[p.i]; c {
		case '\\':
			escaped = true
			p.i += 2
			continue
		case '"':
			v := p.s[start:p.i]
			p.i++
			if escaped {
				v = ""
			}
			return v, true
		}
		p.i++
	}
	return "", false
}

// parseForNode reads a Forwarded node: IPv4 or "[IPv6]", with an optional ":port". It also takes
// an unbracketed IPv6 address, which RFC 7239 forbids but some proxies send; "unknown" and
// obfuscated identifiers ("_hidden") are not addresses.
func parseForNode(s string) netip.Addr {
	if s == "" || s[0] == '_' || strings.EqualFold(s, "unknown") {
		return netip.Addr{}
	}
	return parseNode(s)
}
