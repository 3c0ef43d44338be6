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
//
// The headers are parsed from the right as well, element by element, so that what a client wrote
// left of its proxies' elements, an unbalanced quote say, cannot change how those read.
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

// hops keeps the rightmost MaxHops hops, pushed from the right, so that arbitrarily long headers
// cost no allocation. An invalid Addr marks a hop that is not an address.
type hops struct {
	kept   [MaxHops]netip.Addr
	n      int  // hops kept
	hasFor bool // a Forwarded element named a for= node
}

func (h *hops) push(a netip.Addr) {
	if h.n < MaxHops {
		h.kept[h.n] = a
		h.n++
	}
}

func (h *hops) full() bool { return h.n == MaxHops }

func (h *hops) len() int { return h.n }

// fromRight returns the i-th hop counting from the right, 0 being the rightmost.
func (h *hops) fromRight(i int) netip.Addr { return h.kept[i] }

// window hands out header lines from the last, up to maxHeaderBytes of them counted from the
// right.
type window struct {
	lines  []string
	budget int
}

// next returns the next line leftwards. cut says that only the right part of the line fits, or
// none of it; its leftmost element is then incomplete, and stands for a malformed hop so that the
// walk stops there instead of reading a fragment as an address. No line follows a cut one.
func (w *window) next() (l string, cut, ok bool) {
	if len(w.lines) == 0 {
		return "", false, false
	}
	l = w.lines[len(w.lines)-1]
	w.lines = w.lines[:len(w.lines)-1]
	if keep := max(w.budget, 0); len(l) > keep {
		w.lines = nil
		return l[len(l)-keep:], true, true
	}
	w.budget -= len(l) + 1
	return l, false, true
}

// parseXFF pushes one hop per X-Forwarded-For element, from the right. It and parseForwarded
// repeat the same few lines on purpose: sharing them through a function value would make the hops
// escape to the heap, one 1.8 KB allocation per request.
func parseXFF(h *hops, lines []string) {
	w := window{lines: lines, budget: maxHeaderBytes}
	for l, cut, ok := w.next(); ok && !h.full(); l, cut, ok = w.next() {
		parseXFFLine(h, l, cut)
	}
}

func parseXFFLine(h *hops, l string, cut bool) {
	for end := len(l); !h.full(); {
		start := strings.LastIndexByte(l[:end], ',') + 1
		elem := strings.TrimSpace(l[start:end])
		switch {
		case start == 0 && cut:
			h.push(netip.Addr{})
		case elem == "":
			// "a,,b" or a trailing comma carries no hop; it is not garbage either.
		default:
			h.push(parseNode(elem))
		}
		if start == 0 {
			return
		}
		end = start - 1
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
// malformed hop. Elements are delimited from the right (see elementStart), then each is parsed on
// its own, so that a broken one cannot swallow its neighbours. Parsing goes on past MaxHops,
// within the window, only to learn whether some element names for=.
func parseForwarded(h *hops, lines []string) {
	w := window{lines: lines, budget: maxHeaderBytes}
	for l, cut, ok := w.next(); ok && !(h.full() && h.hasFor); l, cut, ok = w.next() {
		parseForwardedLine(h, l, cut)
	}
}

func parseForwardedLine(h *hops, l string, cut bool) {
	for end := len(l); !(h.full() && h.hasFor); {
		start := elementStart(l, end)
		p := fwdParser{s: l[start:end]}
		e, ok := p.element()
		if e.sawFor {
			h.hasFor = true
		}
		switch {
		case start == 0 && cut, !ok, !p.done():
			h.push(netip.Addr{})
		case e.empty:
			// "a, ,b" or a trailing comma carries no hop; it is not garbage either.
		default:
			// Without for= the element still stands for a hop, one we know nothing about.
			h.push(e.addr)
		}
		if start == 0 {
			return
		}
		end = start - 1
	}
}

// elementStart returns where the Forwarded element ending at l[end] begins: just after the
// nearest ',' to its left outside a quoted-string, or 0. Read from the right, a '"' outside a
// quoted-string closes one, which opens at the nearest unescaped '"' before it. That finds the
// elements a proxy appended whatever precedes them; garbage further left splits somewhere, and
// its pieces fail to parse. A quote that nothing opens leaves no boundary to trust: the rest of
// the line is one element, which cannot parse either.
func elementStart(l string, end int) int {
	for i := end - 1; i >= 0; i-- {
		switch l[i] {
		case ',':
			return i + 1
		case '"':
			if i = openingQuote(l, i); i < 0 {
				return 0
			}
		}
	}
	return 0
}

// openingQuote returns the index of the '"' opening the quoted-string that l[closing] closes, or
// -1. Inside a quoted-string every '\' starts a pair, so a '"' there is escaped exactly when an
// odd number of backslashes precede it. (In a well-formed element the opening quote follows '='.)
func openingQuote(l string, closing int) int {
	for j := closing - 1; j >= 0; j-- {
		if l[j] != '"' {
			continue
		}
		k := j
		for k > 0 && l[k-1] == '\\' {
			k--
		}
		if (j-k)%2 == 0 {
			return j
		}
		j = k // past the backslashes, none of which is a quote
	}
	return -1
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

// element parses one element up to and including its ','. ok is false on a syntax error.
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
