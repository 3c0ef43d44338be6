package mirrors

import (
	"net/url"
	"strings"
)

// Redact returns u as text fit for logs: the values of signature, credential and session-token
// parameters are replaced by "REDACTED" and a password in the userinfo is hidden. The other
// parameters (expiry, date, algorithm) stay, in their order, because they explain a failure.
func Redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	if c.RawQuery != "" {
		parts := strings.Split(c.RawQuery, "&")
		for i, p := range parts {
			name, _, hasValue := strings.Cut(p, "=")
			if n, err := url.QueryUnescape(name); err == nil {
				name = n
			}
			if hasValue && isSecretParam(name) {
				parts[i] = p[:strings.IndexByte(p, '=')+1] + "REDACTED"
			}
		}
		c.RawQuery = strings.Join(parts, "&")
	}
	return c.Redacted()
}

// isSecretParam reports whether a query parameter lets whoever reads it fetch the object or learn
// whose key signed it. Case-insensitive: S3-compatible services accept either spelling.
func isSecretParam(name string) bool {
	switch strings.ToLower(name) {
	case "x-amz-signature", "x-amz-credential", "x-amz-security-token",
		"x-goog-signature", "x-goog-credential",
		"signature": // V2 signatures of both providers
		return true
	}
	return false
}
