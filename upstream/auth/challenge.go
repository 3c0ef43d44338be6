package auth

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Bounds on what ParseChallenge accepts. Registries send one or two challenges of a few hundred
// bytes with at most five parameters (realm, service, scope, error, error_description); anything
// far beyond that is not a registry speaking.
const (
	maxChallengeBytes = 8 << 10
	maxChallenges     = 8
	maxParams         = 16
)

// ErrChallenge is wrapped by every ParseChallenge error.
var ErrChallenge = errors.New("malformed WWW-Authenticate challenge")

// ErrRealm is wrapped by every error about a realm a registry named.
var ErrRealm = errors.New("unusable token realm")

// Challenge is one challenge of a WWW-Authenticate header (RFC 7235). Scheme and parameter names
// are lowercased, since both are case-insensitive; values are kept as sent, unquoted. Params is
// nil when the challenge has none.
type Challenge struct {
	Scheme string
	Params map[string]string
}

// Realm returns the realm parameter: for Bearer, the URL of the token endpoint.
func (c Challenge) Realm() string { return c.Params["realm"] }

// Service returns the service parameter, passed back to the token endpoint as it is.
func (c Challenge) Service() string { return c.Params["service"] }

// Scope returns the scope parameter: the access the registry wants a token to grant, e.g.
// "repository:acme/app:pull"; "" when the registry does not say.
func (c Challenge) Scope() string { return c.Params["scope"] }

// String renders c in a form ParseChallenge reads back to an equal value: parameters in name
// order, every value quoted.
func (c Challenge) String() string {
	var b strings.Builder
	b.WriteString(c.Scheme)
	keys := make([]string, 0, len(c.Params))
	for k := range c.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i == 0 {
			b.WriteByte(' ')
		} else {
			b.WriteByte(',')
		}
		writeParam(&b, k, c.Params[k])
	}
	return b.String()
}

// ChallengeHeader returns the WWW-Authenticate value that sends a client to a token endpoint:
// Bearer realm="...",service="...",scope="...", leaving out an empty service or scope. Control
// characters, which a header cannot carry, become spaces.
func ChallengeHeader(realm, service, scope string) string {
	var b strings.Builder
	b.Grow(len("Bearer realm=\"\",service=\"\",scope=\"\"") + len(realm) + len(service) + len(scope))
	b.WriteString("Bearer ")
	writeParam(&b, "realm", realm)
	if service != "" {
		b.WriteByte(',')
		writeParam(&b, "service", service)
	}
	if scope != "" {
		b.WriteByte(',')
		writeParam(&b, "scope", scope)
	}
	return b.String()
}

func writeParam(b *strings.Builder, name, value string) {
	b.WriteString(name)
	b.WriteString(`="`)
	for i := 0; i < len(value); i++ {
		switch c := value[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' && c != '\t' || c == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// ParseChallenge parses a WWW-Authenticate value: one or more challenges separated by commas,
// each a scheme followed by comma-separated name=value parameters, values being tokens or quoted
// strings with backslash escapes. Several header lines may be joined with ", " before the call.
// A token68 challenge (a scheme and one opaque word) is accepted and its word dropped: no
// registry sends one, but a header may mix it with a Bearer challenge.
//
// A header longer than 8 KiB, with more than 8 challenges or more than 16 parameters in one,
// or with a parameter named twice in one challenge, is refused with an error wrapping
// ErrChallenge.
func ParseChallenge(header string) ([]Challenge, error) {
	if len(header) > maxChallengeBytes {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrChallenge, maxChallengeBytes)
	}
	p := challengeParser{s: header}
	var out []Challenge
	for {
		p.skipSeparators()
		if p.done() {
			break
		}
		if len(out) == maxChallenges {
			return nil, fmt.Errorf("%w: more than %d challenges", ErrChallenge, maxChallenges)
		}
		c, err := p.challenge()
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no challenge", ErrChallenge)
	}
	return out, nil
}

// challengeParser walks the header once, byte by byte: the grammar is small and an
// allocation-free scan is both simpler to bound and faster than a regexp.
type challengeParser struct {
	s   string
	pos int
}

func (p *challengeParser) done() bool { return p.pos >= len(p.s) }

func (p *challengeParser) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.pos]
}

func (p *challengeParser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format+" at byte %d", append(append([]any{ErrChallenge}, args...), p.pos)...)
}

// skipSpace skips optional white space (OWS and BWS of RFC 9110) and reports whether there was any.
func (p *challengeParser) skipSpace() bool {
	start := p.pos
	for !p.done() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
	return p.pos > start
}

// skipSeparators skips white space and commas: the list rule allows empty elements.
func (p *challengeParser) skipSeparators() {
	for !p.done() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t' || p.s[p.pos] == ',') {
		p.pos++
	}
}

func (p *challengeParser) token() string {
	start := p.pos
	for !p.done() && isTokenChar(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

func (p *challengeParser) challenge() (Challenge, error) {
	scheme := p.token()
	if scheme == "" {
		return Challenge{}, p.errorf("expected an auth scheme")
	}
	c := Challenge{Scheme: strings.ToLower(scheme)}
	if p.done() || p.peek() == ',' {
		return c, nil
	}
	if !p.skipSpace() {
		return Challenge{}, p.errorf("expected a space after the auth scheme")
	}
	if p.done() || p.peek() == ',' || p.token68() {
		return c, nil
	}
	for {
		name := p.token()
		if name == "" {
			return Challenge{}, p.errorf("expected a parameter name")
		}
		p.skipSpace()
		if p.peek() != '=' {
			return Challenge{}, p.errorf("expected '=' after a parameter name")
		}
		p.pos++
		p.skipSpace()
		var value string
		if p.peek() == '"' {
			v, err := p.quoted()
			if err != nil {
				return Challenge{}, err
			}
			value = v
		} else if value = p.token(); value == "" {
			return Challenge{}, p.errorf("expected a parameter value")
		}
		key := strings.ToLower(name)
		if _, dup := c.Params[key]; dup {
			return Challenge{}, p.errorf("parameter %q given twice", key)
		}
		if len(c.Params) == maxParams {
			return Challenge{}, p.errorf("more than %d parameters", maxParams)
		}
		if c.Params == nil {
			c.Params = make(map[string]string, 4)
		}
		c.Params[key] = value
		p.skipSpace()
		if p.done() {
			return c, nil
		}
		if p.peek() != ',' {
			return Challenge{}, p.errorf("expected ',' after a parameter")
		}
		p.skipSeparators()
		if p.done() || !p.paramAhead() {
			return c, nil
		}
	}
}

// paramAhead reports whether a parameter (name BWS "=") rather than a new challenge (scheme
// followed by a space, a comma or the end) starts at the current position.
func (p *challengeParser) paramAhead() bool {
	save := p.pos
	defer func() { p.pos = save }()
	if p.token() == "" {
		return false
	}
	p.skipSpace()
	return p.peek() == '='
}

// token68 consumes a token68 (RFC 7235: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
// *"=") when one is all that remains of the challenge, and reports whether it did. A parameter
// also starts with such characters, so the word only counts when a comma or the end follows it.
func (p *challengeParser) token68() bool {
	i := p.pos
	for i < len(p.s) && isToken68Char(p.s[i]) {
		i++
	}
	if i == p.pos {
		return false
	}
	for i < len(p.s) && p.s[i] == '=' {
		i++
	}
	for i < len(p.s) && (p.s[i] == ' ' || p.s[i] == '\t') {
		i++
	}
	if i < len(p.s) && p.s[i] != ',' {
		return false
	}
	p.pos = i
	return true
}

// quoted reads a quoted-string starting at '"'. It returns a substring of the header when there
// is no escape, so the common case allocates nothing.
func (p *challengeParser) quoted() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	var b []byte // nil until the first escape
	for !p.done() {
		c := p.s[p.pos]
		switch {
		case c == '"':
			p.pos++
			if b == nil {
				return p.s[start : p.pos-1], nil
			}
			return string(b), nil
		case c == '\\':
			if p.pos+1 >= len(p.s) || !isQuotedPairChar(p.s[p.pos+1]) {
				return "", p.errorf("bad escape in a quoted string")
			}
			if b == nil {
				b = append(make([]byte, 0, len(p.s)-start), p.s[start:p.pos]...)
			}
			b = append(b, p.s[p.pos+1])
			p.pos += 2
		case c == '\t' || c >= ' ' && c != 0x7f:
			if b != nil {
				b = append(b, c)
			}
			p.pos++
		default:
			return "", p.errorf("control character in a quoted string")
		}
	}
	return "", p.errorf("unterminated quoted string")
}

// isTokenChar reports whether c is a tchar of RFC 9110.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken68Char(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~+/", c) >= 0
}

// isQuotedPairChar reports whether c may follow a backslash: HTAB, SP, VCHAR or obs-text.
func isQuotedPairChar(c byte) bool { return c == '\t' || c >= ' ' && c != 0x7f }

// ValidRealm parses a realm named by a registry and checks that it is somewhere a token request
// may go: an absolute http or https URL with a host and no user information. The fragment is
// dropped; a query is kept, and the token request adds its parameters to it. Errors wrap
// ErrRealm and do not repeat the realm, which could carry anything.
func ValidRealm(realm string) (*url.URL, error) {
	if realm == "" {
		return nil, fmt.Errorf("%w: empty", ErrRealm)
	}
	u, err := url.Parse(realm)
	if err != nil {
		return nil, fmt.Errorf("%w: not a URL", ErrRealm)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: scheme %q is not http or https", ErrRealm, u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, fmt.Errorf("%w: no host", ErrRealm)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: carries user information", ErrRealm)
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// checkRealm is ValidRealm plus one rule that needs the registry's URL: a registry reached over
// https may not send credentials or tokens over plain http by naming an http realm.
func checkRealm(realm string, registry *url.URL) (*url.URL, error) {
	u, err := ValidRealm(realm)
	if err != nil {
		return nil, err
	}
	if registry.Scheme == "https" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: http realm for an https registry", ErrRealm)
	}
	return u, nil
}

// realmName is a realm as errors and logs show it: without its query, which the token request
// fills with service and scope.
func realmName(u *url.URL) string {
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}
