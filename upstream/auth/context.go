package auth

import "context"

type scopeKey struct{}

type clientTokenKey struct{}

// WithScope returns a context under which Transport asks for tokens granting scope, e.g.
// "repository:acme/app:pull" (the repository as the upstream names it). The transport cannot
// tell the repository from a URL reliably: a name may contain "manifests" or "blobs".
//
// Without a scope a request still works when the registry names one in its challenge, as
// registries commonly do, but it cannot reuse a cached token before the registry has answered
// 401: every such request costs an extra round trip.
func WithScope(ctx context.Context, scope string) context.Context {
	return context.WithValue(ctx, scopeKey{}, scope)
}

func scopeFrom(ctx context.Context) string {
	s, _ := ctx.Value(scopeKey{}).(string)
	return s
}

// WithClientToken returns a context under which Transport sends authorization, a whole
// Authorization header value such as "Bearer xyz", exactly as given: it fetches no token, caches
// nothing, and returns the registry's answer, a 401 included, as it is. This is for relaying a
// client's own credentials, which must never serve another client. An empty authorization
// means none: the request goes through the transport's own flow.
func WithClientToken(ctx context.Context, authorization string) context.Context {
	return context.WithValue(ctx, clientTokenKey{}, newSecret(authorization))
}

func clientTokenFrom(ctx context.Context) (secret, bool) {
	s, _ := ctx.Value(clientTokenKey{}).(secret)
	return s, s.reveal() != ""
}
