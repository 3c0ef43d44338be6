package auth

import (
	"fmt"
	"io"
	"log/slog"
)

// redacted is what every printed or logged form of a secret shows.
const redacted = "REDACTED"

// secret holds a password, a token or an Authorization header value. Every way of printing it
// (fmt with any verb, slog, a context's String) shows "REDACTED". The value sits behind a
// pointer because fmt does not ask unexported fields how to print themselves: a struct holding
// a secret, printed by reflection, shows an address instead of the text.
type secret struct{ p *string }

func newSecret(s string) secret { return secret{p: &s} }

// reveal returns the value, "" for the zero secret. Call it only where the value leaves for
// the network.
func (s secret) reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

func (secret) String() string             { return redacted }
func (secret) GoString() string           { return redacted }
func (secret) LogValue() slog.Value       { return slog.StringValue(redacted) }
func (secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }
