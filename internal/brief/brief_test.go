package brief_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/happy-turtle/oci-proxy/internal/brief"
)

func TestText(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int
		want  string
	}{
		{"short", 10, "short"},
		{"exactly ten", 11, "exactly ten"},
		{"one line\nand another", 100, "one line..."},
		{"carriage\rreturn", 100, "carriage..."},
		{strings.Repeat("a", 20), 10, "aaaaaaa..."},
		{"ääääää", 8, "ää..."}, // never half a character
		{"", 5, ""},
	} {
		got := brief.Text(tc.in, tc.limit)
		if got != tc.want {
			t.Errorf("Text(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
		}
		if len(got) > max(tc.limit, len(tc.want)) || !utf8.ValidString(got) || strings.ContainsAny(got, "\r\n") {
			t.Errorf("Text(%q, %d) = %q: too long, broken or on two lines", tc.in, tc.limit, got)
		}
	}
	if brief.Error(nil, 10) != "" || brief.Error(errors.New("x\ny"), 10) != "x..." {
		t.Error("Error does not follow Text")
	}
}
