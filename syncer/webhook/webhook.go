// Package webhook takes the push announcements of registries for the sync command: distribution's
// notification envelopes and Pub/Sub push messages (Artifact Registry), checked for the shared
// token, parsed into Pushes under the names clients use, and queued so that bursts and retries
// cost one copy each. It copies nothing itself: the queue's run function does (package syncer).
package webhook

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/brief"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// Push is a manifest the upstream registry announced: Repo is the repository name as clients pull
// it (not the upstream's path) and Ref its tag or digest.
type Push struct {
	Repo string
	Ref  oci.Reference
	// Digest is, for a tag, the manifest the push put under it, when the notification says:
	// the copy reads that manifest by its digest, the tag choosing only whether to copy it. A
	// registry may announce a push before the tag points at it (distribution does), and the
	// tag may have moved on since. Zero: read by the tag.
	Digest oci.Digest
}

// String returns "repo:tag" or "repo@digest".
func (p Push) String() string {
	if p.Ref.IsDigest() {
		return p.Repo + "@" + p.Ref.String()
	}
	return p.Repo + ":" + p.Ref.String()
}

// ErrEvent is wrapped by every error about a malformed event body.
var ErrEvent = errors.New("malformed event")

// EventsMediaType is the media type of distribution's notification envelopes.
const EventsMediaType = "application/vnd.docker.distribution.events.v1+json"

// manifestTypes are the media types of the manifests sync copies: OCI and Docker schema 2 images
// and indexes. Blob pushes (layers, configs, "application/octet-stream") and legacy schema 1
// manifests are not announcements of anything sync can copy.
var manifestTypes = map[string]bool{
	"application/vnd.oci.image.manifest.v1+json":                true,
	"application/vnd.oci.image.index.v1+json":                   true,
	"application/vnd.docker.distribution.manifest.v2+json":      true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
}

func isManifestType(mt string) bool {
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	return manifestTypes[strings.ToLower(strings.TrimSpace(mt))]
}

// registryEnvelope is the part of a distribution notification envelope that sync reads; the rest
// (id, timestamp, request, actor, source, size) is ignored.
type registryEnvelope struct {
	Events *[]registryEvent `json:"events"`
}

type registryEvent struct {
	Action string `json:"action"`
	Target struct {
		MediaType  string `json:"mediaType"`
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		URL        string `json:"url"`
		Tag        string `json:"tag"`
	} `json:"target"`
}

// ParseRegistryEvents reads a distribution notification envelope and returns the manifest pushes
// in it, in order and without duplicates. Pulls, deletes, mounts and blob pushes are skipped, and
// so are pushes to repositories that no route of ups serves. A body that is not an envelope, or a
// manifest push whose repository, tag, digest or URL is malformed, is an error wrapping ErrEvent.
func ParseRegistryEvents(body []byte, ups *upstream.Table) ([]Push, error) {
	var env registryEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%w: registry envelope: %w", ErrEvent, err)
	}
	if env.Events == nil {
		return nil, fmt.Errorf("%w: registry envelope: no \"events\"", ErrEvent)
	}
	var out pushSet
	for i, ev := range *env.Events {
		if ev.Action != "push" || !isManifestType(ev.Target.MediaType) {
			continue
		}
		host := ""
		if ev.Target.URL != "" {
			u, err := url.Parse(ev.Target.URL)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("%w: event %d: target.url is not an absolute URL", ErrEvent, i)
			}
			host = u.Host
		}
		ref := ev.Target.Tag
		if ref == "" {
			ref = ev.Target.Digest
		}
		p, ok, err := toPush(ups, host, ev.Target.Repository, ref)
		if err != nil {
			return nil, fmt.Errorf("%w: event %d: %w", ErrEvent, i, err)
		}
		if ok && ev.Target.Tag != "" && ev.Target.Digest != "" {
			if p.Digest, err = oci.ParseDigest(ev.Target.Digest); err != nil {
				return nil, fmt.Errorf("%w: event %d: target.digest %q: %w", ErrEvent, i, ev.Target.Digest, err)
			}
		}
		if ok {
			out.add(p)
		}
	}
	return out.list, nil
}

// pubsubPush is a Pub/Sub push request:
// https://cloud.google.com/pubsub/docs/push#receive_push.
type pubsubPush struct {
	Message *struct {
		Data []byte `json:"data"` // base64 in JSON; encoding/json decodes it
	} `json:"message"`
}

// gcrNotification is what Artifact Registry (and Container Registry) publish on the "gcr" topic:
// https://cloud.google.com/artifact-registry/docs/configure-notifications.
type gcrNotification struct {
	Action string `json:"action"` // INSERT | DELETE
	Digest string `json:"digest"` // HOST/PATH@sha256:...
	Tag    string `json:"tag"`    // HOST/PATH:TAG, absent for an untagged push
}

// ParsePubSub reads a Pub/Sub push request carrying an Artifact Registry notification and returns
// the push it announces: the tag when the message names one, else the digest. DELETE and other
// actions, and repositories that no route of ups serves, give no push. A body that is not a push
// request, data that is not base64 of a notification, or a malformed reference is an error
// wrapping ErrEvent.
func ParsePubSub(body []byte, ups *upstream.Table) ([]Push, error) {
	var req pubsubPush
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("%w: pub/sub push: %w", ErrEvent, err)
	}
	if req.Message == nil {
		return nil, fmt.Errorf("%w: pub/sub push: no \"message\"", ErrEvent)
	}
	if len(req.Message.Data) == 0 {
		return nil, fmt.Errorf("%w: pub/sub push: message has no data", ErrEvent)
	}
	var n gcrNotification
	if err := json.Unmarshal(req.Message.Data, &n); err != nil {
		return nil, fmt.Errorf("%w: pub/sub message data: %w", ErrEvent, err)
	}
	if n.Action != "INSERT" {
		return nil, nil
	}
	var (
		host, repo, ref string
		err             error
	)
	switch {
	case n.Tag != "":
		host, repo, ref, err = splitReference(n.Tag, false)
	case n.Digest != "":
		host, repo, ref, err = splitReference(n.Digest, true)
	default:
		err = errors.New("INSERT names neither a tag nor a digest")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: pub/sub notification: %w", ErrEvent, err)
	}
	p, ok, err := toPush(ups, host, repo, ref)
	if err != nil {
		return nil, fmt.Errorf("%w: pub/sub notification: %w", ErrEvent, err)
	}
	if !ok {
		return nil, nil
	}
	return []Push{p}, nil
}

// splitReference splits a fully qualified reference, "HOST/PATH:TAG" or "HOST/PATH@DIGEST", into
// its parts. The host is required (a registry notification always names it): unlike docker's
// reference grammar, there is no default registry to fall back on. The parts are validated later
// by toPush.
func splitReference(s string, digest bool) (host, repo, ref string, err error) {
	host, rest, ok := strings.Cut(s, "/")
	if !ok || host == "" || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return "", "", "", fmt.Errorf("reference %q does not start with a registry host", s)
	}
	if digest {
		if repo, ref, ok = strings.Cut(rest, "@"); !ok {
			return "", "", "", fmt.Errorf("reference %q has no digest", s)
		}
		return host, repo, ref, nil
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 || strings.Contains(rest[i:], "/") {
		return "", "", "", fmt.Errorf("reference %q has no tag", s)
	}
	return host, rest[:i], rest[i+1:], nil
}

// toPush validates an upstream repository path and a reference and maps them to a client name.
// ok is false, with no error, when no route serves the repository.
func toPush(ups *upstream.Table, host, repo, ref string) (p Push, ok bool, err error) {
	if err := oci.ValidateName(repo); err != nil {
		return Push{}, false, fmt.Errorf("repository %q: %w", repo, err)
	}
	rf, err := oci.ParseReference(ref)
	if err != nil {
		return Push{}, false, fmt.Errorf("reference %q: %w", ref, err)
	}
	name, ok := ups.ClientName(host, repo)
	// A route prefix can make a name that clients could not ask for; nothing would pull it.
	if !ok || oci.ValidateName(name) != nil {
		return Push{}, false, nil
	}
	return Push{Repo: name, Ref: rf}, true, nil
}

// pushSet keeps pushes in first-seen order without duplicates.
type pushSet struct {
	seen map[Push]bool
	list []Push
}

func (s *pushSet) add(p Push) {
	if s.seen[p] {
		return
	}
	if s.seen == nil {
		s.seen = make(map[Push]bool)
	}
	s.seen[p] = true
	s.list = append(s.list, p)
}

// RetryAfter is the Retry-After of a 503 for an event whose pushes could not all be queued: a
// few blob copies' time for the workers to make room. distribution's notification endpoints
// retry on their own backoff and Pub/Sub on its subscription's retry policy; both retry a 5xx.
const RetryAfter = 10 * time.Second

// DefaultMaxBody bounds a webhook request body when Options.MaxBody is zero. A
// distribution envelope holds at most a few dozen events of a few hundred bytes each.
const DefaultMaxBody = 1 << 20

// The paths NewHandler serves.
const (
	RegistryPath = "/webhooks/registry"
	PubSubPath   = "/webhooks/pubsub"
)

// Options configure NewHandler.
type Options struct {
	// Token is the shared secret every request must carry, as "Authorization: Bearer <token>" or
	// a "token" query parameter; it is compared exactly (see ReadTokenFile for a file's trailing
	// newline). Required: an empty Token is an error, never an open endpoint.
	Token string
	// Upstream maps the repositories named in events back to client names. Required.
	Upstream *upstream.Table
	// Trigger receives each push of a well-formed request before the response is written, with
	// the request's context, which ends with the request, and reports whether the push will run.
	// It must not block or run the sync itself: a slow answer makes the registry retry and holds
	// its queue of events. Hand the push to a Queue (Queue.Trigger) instead. Required.
	Trigger func(ctx context.Context, p Push) bool
	// Logger receives a line per rejected or accepted request (never the token); nil discards.
	Logger *slog.Logger
	// MaxBody bounds the request body in bytes; larger bodies get 413. Zero means DefaultMaxBody.
	MaxBody int64
}

// NewHandler returns the handler for POST /webhooks/registry (distribution notification
// envelopes, see ParseRegistryEvents) and POST /webhooks/pubsub (Pub/Sub push requests, see
// ParsePubSub). Requests are checked in this order: an unknown path is 404, a method other than
// POST 405, a missing or wrong token 401 (the body is not read), a body over MaxBody 413, a
// content type that is not JSON 415, an unparsable body 400; otherwise every push is handed to
// Trigger, and the answer is 202 Accepted when Trigger took them all, else 503 Service
// Unavailable with Retry-After (RetryAfter): the sender keeps the event and sends it again, and
// a Queue merges the pushes it took the first time, if still waiting, with those of the retry.
func NewHandler(opts Options) (http.Handler, error) {
	switch {
	case opts.Token == "":
		return nil, errors.New("webhook: no token configured (sync.webhook.token_file)")
	case opts.Upstream == nil:
		return nil, errors.New("webhook: no upstream table")
	case opts.Trigger == nil:
		return nil, errors.New("webhook: no trigger")
	case opts.MaxBody < 0:
		return nil, fmt.Errorf("webhook: negative body limit %d", opts.MaxBody)
	}
	h := &webhookHandler{
		token:   sha256.Sum256([]byte(opts.Token)),
		ups:     opts.Upstream,
		trigger: opts.Trigger,
		log:     opts.Logger,
		maxBody: opts.MaxBody,
		compare: subtle.ConstantTimeCompare,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxBody
	}
	return h, nil
}

type webhookHandler struct {
	// token is the SHA-256 of the configured token: comparing fixed-size hashes keeps the
	// comparison's time independent of the token's length as well as its content.
	token   [sha256.Size]byte
	ups     *upstream.Table
	trigger func(context.Context, Push) bool
	log     *slog.Logger
	maxBody int64
	// compare is subtle.ConstantTimeCompare; a field so that a test can see that it is used.
	compare func(a, b []byte) int
}

func (h *webhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var parse func([]byte, *upstream.Table) ([]Push, error)
	switch r.URL.Path {
	case RegistryPath:
		parse = ParseRegistryEvents
	case PubSubPath:
		parse = ParsePubSub
	default:
		http.NotFound(w, r)
		return
	}
	// r.URL is never logged: its query may hold the token.
	route := r.URL.Path
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.reject(w, route, http.StatusMethodNotAllowed, "method not allowed; use POST", "method")
		return
	}
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="oci-proxy sync"`)
		h.reject(w, route, http.StatusUnauthorized, "missing or wrong token", "token")
		return
	}
	if r.ContentLength > h.maxBody {
		h.reject(w, route, http.StatusRequestEntityTooLarge, "body too large", "size")
		return
	}
	if !isJSON(r.Header.Get("Content-Type")) {
		h.reject(w, route, http.StatusUnsupportedMediaType, "content type must be JSON", "content-type")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			h.reject(w, route, http.StatusRequestEntityTooLarge, "body too large", "size")
			return
		}
		h.log.Warn("webhook: read body", "route", route, "err", err)
		h.reject(w, route, http.StatusBadRequest, "cannot read body", "read")
		return
	}
	pushes, err := parse(body, h.ups)
	if err != nil {
		// The parse error names the bad field; it describes the sender's own input.
		h.log.Warn("webhook: bad event", "route", route, "err", err)
		h.reject(w, route, http.StatusBadRequest, "malformed event: "+shortError(err), "parse")
		return
	}
	refused := 0
	for _, p := range pushes {
		h.log.Info("webhook: push", "route", route, "repository", p.Repo, "ref", p.Ref.String())
		// Every push is offered, even after one is refused: those taken now merge with the same
		// pushes of the retry.
		if !h.trigger(r.Context(), p) {
			refused++
		}
	}
	if refused > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(RetryAfter/time.Second)))
		h.reject(w, route, http.StatusServiceUnavailable,
			fmt.Sprintf("sync queue full: %d of %d pushes not queued; retry later", refused, len(pushes)), "queue full")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = io.WriteString(w, `{"accepted":`+strconv.Itoa(len(pushes))+"}\n")
}

// authorized reports whether the bearer token or the token query parameter is the configured
// token. Both are checked so that a Pub/Sub push subscription, whose Authorization header may
// carry Google's own OIDC token, can send ours in the query.
func (h *webhookHandler) authorized(r *http.Request) bool {
	ok := false
	if scheme, tok, found := strings.Cut(r.Header.Get("Authorization"), " "); found && strings.EqualFold(scheme, "Bearer") {
		ok = h.matches(strings.TrimSpace(tok)) || ok
	}
	if q := r.URL.Query(); q.Has("token") {
		ok = h.matches(q.Get("token")) || ok
	}
	return ok
}

func (h *webhookHandler) matches(tok string) bool {
	if tok == "" {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return h.compare(sum[:], h.token[:]) == 1
}

func (h *webhookHandler) reject(w http.ResponseWriter, route string, status int, msg, reason string) {
	h.log.Info("webhook: rejected", "route", route, "status", status, "reason", reason)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// isJSON accepts what the senders use: distribution's EventsMediaType, Pub/Sub's
// application/json, any other +json type, and no Content-Type at all.
func isJSON(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// shortError keeps a client-facing message to one short line.
func shortError(err error) string {
	return brief.Text(strings.TrimPrefix(err.Error(), ErrEvent.Error()+": "), 200)
}

// ReadTokenFile reads the webhook token from path (sync.webhook.token_file), without the
// surrounding white space that editors and `echo` add. An empty token is an error.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read webhook token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("webhook token file %s is empty", path)
	}
	return tok, nil
}
