// Package auth is the registry token flow oci-proxy uses when it talks to an upstream registry
// that demands authentication (GHCR, Docker Hub, Quay, distribution with token auth):
//
//   - ParseChallenge reads WWW-Authenticate challenges; ChallengeHeader writes the one the proxy
//     sends.
//   - Credentials (Anonymous, Static, FromFiles, DockerConfig) say what to present for a
//     registry host.
//   - Transport is an http.RoundTripper that answers a registry's 401 by fetching a token from
//     the realm the registry names, caches it for its lifetime, and retries once.
//   - NewRelay serves oci-proxy's own token endpoint for routes whose clients bring their own
//     credentials: it rewrites the client's scope to the upstream's names and forwards the
//     request, and the client's Authorization header with it, to the upstream's realm.
//
// It is not a registry client: it does not parse OCI paths (the redirector does), build
// manifest or blob URLs (package upstream does), or cache manifests. It knows a repository only
// through the scope its caller gives it.
//
// Passwords and tokens never appear in an error, a log record or the printed form of any value
// of this package.
package auth
