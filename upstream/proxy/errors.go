package proxy

import (
	"net/http"
	"strconv"
)

// Error codes of the distribution spec (and distribution's UNKNOWN and UNAVAILABLE) used for
// answers the proxy makes itself.
const (
	codeUnavailable     = "UNAVAILABLE"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeManifestInvalid = "MANIFEST_INVALID"
	codeUnsupported     = "UNSUPPORTED"
	codeUnknown         = "UNKNOWN"
)

// Messages sent to clients. They name what failed, never why in detail: the cause is logged.
const (
	msgUnreachable = "upstream registry unreachable"
	msgUnavailable = "upstream registry unavailable"
	msgTooLarge    = "upstream answer too large"
	msgMismatch    = "upstream manifest does not match the requested digest"
	msgBadTagList  = "upstream tag list is not valid JSON"
	msgBadRedirect = "upstream redirect is not an absolute http(s) URL"
)

// errorAnswer is an answer of the proxy's own: status and one OCI error
// {"errors":[{"code":...,"message":...}]}, as application/json. Codes and messages are printable
// ASCII constants of this package, for which strconv.Quote produces valid JSON strings.
func errorAnswer(status int, code, msg string) *answer {
	body := []byte(`{"errors":[{"code":` + strconv.Quote(code) + `,"message":` + strconv.Quote(msg) + `}]}` + "\n")
	return &answer{
		status: status,
		body:   body,
		header: http.Header{
			"Content-Type":           {"application/json"},
			"Content-Length":         {strconv.Itoa(len(body))},
			"X-Content-Type-Options": {"nosniff"},
		},
	}
}

// failedAnswer is errorAnswer for an upstream that is unreachable or failing: a stale copy, when
// there is one, is served instead. cause is logged.
func failedAnswer(status int, msg string, cause error) *answer {
	a := errorAnswer(status, codeUnavailable, msg)
	a.failed = true
	a.cause = cause
	return a
}

// refusedAnswer is an answer from the upstream the proxy will not pass on (too large, wrong
// digest). cause is logged.
func refusedAnswer(code, msg string, cause error) *answer {
	a := errorAnswer(http.StatusBadGateway, code, msg)
	a.cause = cause
	return a
}
