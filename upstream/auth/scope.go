package auth

import (
	"errors"
	"strings"
)

// resourceScope is one scope of a token request, "<type>:<name>:<actions>", e.g.
// "repository:acme/app:pull,push". The name may itself contain ':' (a registry host with a
// port), so the type ends at the first ':' and the actions start after the last.
type resourceScope struct {
	typ     string
	name    string
	actions []string
}

func parseScope(s string) (resourceScope, error) {
	i := strings.IndexByte(s, ':')
	j := strings.LastIndexByte(s, ':')
	if i <= 0 || i == j {
		return resourceScope{}, errors.New("scope is not <type>:<name>:<actions>")
	}
	return resourceScope{typ: s[:i], name: s[i+1 : j], actions: strings.Split(s[j+1:], ",")}, nil
}
