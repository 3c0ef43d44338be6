package auth

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
)

const (
	// maxTokenBody bounds a token endpoint's answer. Tokens are JWTs of a few KiB at most;
	// Docker Hub's, the largest seen, are under 8 KiB.
	maxTokenBody = 64 << 10
	// defaultTokenLifetime is the distribution token spec's: expires_in omitted means 60 s.
	defaultTokenLifetime = 60 * time.Second
	// maxTokenLifetime bounds how long a token is cached, whatever its expires_in says, so that
	// a revoked credential stops working within the hour.
	maxTokenLifetime = time.Hour
	// deniedTTL is how long a refusal by a token endpoint is remembered: long enough that a burst
	// of requests for a private repository costs one token request, short enough that fixed
	// credentials work at once.
	deniedTTL = 10 * time.Second
	// maxDrain is how much of an unwanted body is read so that its connection can be reused.
	maxDrain = 4 << 10
)

// ErrDenied is wrapped by the error of a token request the token endpoint refused with 401 or
// 403: the credentials are wrong, or do not grant the scope.
var ErrDenied = errors.New("token endpoint refused the request")

// tokenRequest builds the GET of the distribution token spec: realm?service=...&scope=...,
// keeping any query the realm has of its own.
func tokenRequest(ctx context.Context, realm *url.URL, service string, scopes []string) (*http.Request, error) {
	u := *realm
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("token request to %s: %w", realmName(realm), err)
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// tokenResponse is a token endpoint's answer. issued_at is not read: a lifetime counts from when
// the request was sent, on this machine's clock, so a token server whose clock is behind cannot
// make a token look valid for longer than it is.
type tokenResponse struct {
	Token       string  `json:"token"`
	AccessToken string  `json:"access_token"` // the OAuth2 name, which some servers use instead
	ExpiresIn   float64 `json:"expires_in"`
}

// parseToken decodes a token endpoint's 200 answer into the token and how long it lives. Errors
// say what was wrong without quoting the body, which holds the token.
func parseToken(body []byte) (secret, time.Duration, error) {
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return secret{}, 0, errors.New("answer is not a token JSON object")
	}
	tok := cmp.Or(tr.Token, tr.AccessToken)
	if tok == "" {
		return secret{}, 0, errors.New("answer has no token")
	}
	if strings.ContainsAny(tok, "\r\n") {
		return secret{}, 0, errors.New("token contains a line break")
	}
	life := defaultTokenLifetime
	switch {
	case tr.ExpiresIn >= maxTokenLifetime.Seconds():
		life = maxTokenLifetime
	case tr.ExpiresIn > 0:
		life = time.Duration(tr.ExpiresIn * float64(time.Second))
	}
	return newSecret(tok), life, nil
}

// readBounded reads r to its end, refusing more than limit bytes.
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("answer larger than %d bytes", limit)
	}
	return b, nil
}

// discard drains a little of an unwanted body, so that its connection can be reused, and closes
// it.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	_ = resp.Body.Close()
}

// ping sends GET to a registry's /v2/ without credentials and returns its challenges: nil when
// it answers 2xx (no authentication needed), an error for any status but 2xx and 401.
func ping(ctx context.Context, rt http.RoundTripper, v2 *url.URL) ([]Challenge, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v2.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("ping %s: %w", v2.Redacted(), err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("ping %s: %w", v2.Redacted(), err)
	}
	defer discard(resp)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return nil, nil
	case resp.StatusCode == http.StatusUnauthorized:
		chs, err := ParseChallenge(strings.Join(resp.Header.Values("Www-Authenticate"), ", "))
		if err != nil {
			return nil, fmt.Errorf("ping %s: %w", v2.Redacted(), err)
		}
		return chs, nil
	}
	return nil, fmt.Errorf("ping %s: status %d", v2.Redacted(), resp.StatusCode)
}

func hasScheme(chs []Challenge, scheme string) bool {
	for _, c := range chs {
		if c.Scheme == scheme {
			return true
		}
	}
	return false
}

// bearerChallenge returns the first Bearer challenge of chs.
func bearerChallenge(chs []Challenge) (Challenge, bool) {
	for _, c := range chs {
		if c.Scheme == "bearer" {
			return c, true
		}
	}
	return Challenge{}, false
}

// await waits for a merged call, or for ctx to end: the call itself runs on, detached, for the
// others waiting on it.
func await(ctx context.Context, ch <-chan singleflight.Result) (any, error) {
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
