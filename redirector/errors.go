package redirector

import (
	"net/http"
	"strconv"
)

// Error codes of the OCI distribution spec (and distribution's PAGINATION_NUMBER_INVALID), used
// exactly as clients expect them.
const (
	CodeNameInvalid       = "NAME_INVALID"
	CodeNameUnknown       = "NAME_UNKNOWN"
	CodeDigestInvalid     = "DIGEST_INVALID"
	CodeManifestUnknown   = "MANIFEST_UNKNOWN"
	CodeBlobUnknown       = "BLOB_UNKNOWN"
	CodeUnsupported       = "UNSUPPORTED"
	CodePaginationInvalid = "PAGINATION_NUMBER_INVALID"
)

// Error is what a client sees when its request is refused: an HTTP status and one OCI error.
// Its message is written for the client; internal causes are logged, never sent.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

// writeError writes e as {"errors":[{"code":...,"message":...}]}. Messages are fixed strings of
// this package or validated input, so the JSON is assembled by hand: it is the hot path of every
// malformed request and needs no encoder.
func writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	body := `{"errors":[{"code":` + strconv.Quote(e.Code) + `,"message":` + jsonString(e.Message) + `}]}` + "\n"
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	if e.Status == http.StatusMethodNotAllowed {
		h.Set("Allow", "GET, HEAD")
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
}

// jsonString quotes s for JSON. strconv.Quote is not enough on its own: it emits \x escapes, which
// JSON does not have, so every non-printable or non-ASCII byte becomes \u00XX here instead.
func jsonString(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}
