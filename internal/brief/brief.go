// Package brief shortens error messages for the places that must keep them to one bounded line:
// sync reports, mirror explanations and the messages a webhook sender reads. It only cuts text;
// it does not decide what an error means.
package brief

import (
	"strings"
	"unicode/utf8"
)

// Error returns err's message up to its first line break, cut to at most limit bytes (on a
// character boundary) with "..." when anything was dropped. A nil error is "".
func Error(err error, limit int) string {
	if err == nil {
		return ""
	}
	return Text(err.Error(), limit)
}

// Text is Error for a message already in hand.
func Text(s string, limit int) string {
	cut := false
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s, cut = s[:i], true
	}
	if len(s) > limit {
		n := max(limit-3, 0)
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s, cut = s[:n], true
	}
	if cut {
		return s + "..."
	}
	return s
}
