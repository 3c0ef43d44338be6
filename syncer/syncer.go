// Package syncer copies blobs (configs and layers) from the upstream registry into every writable
// mirror, under the key layout the proxy redirects to (mirrors.Key), so that clients can be sent
// there: for every configured repository and tag (All), or for one pushed tag or digest (Ref, for
// webhooks). It also parses the registry's push notifications and queues them.
//
// It reads manifests only to find blobs: they stay in the upstream and are never copied. It
// never deletes a correct blob, and it does not choose between mirrors (package mirrors does).
package syncer

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// Target is a mirror that blobs are copied into: object key = mirrors.Key(Prefix, digest).
type Target struct {
	Name   string
	Prefix string
	Writer mirrors.Writer
	// Uploader, when set, stores the blobs instead of Writer.Put (Writer still checks and
	// deletes them): one that reports progress, so that a stall is told from a slow mirror by
	// the bytes it sends rather than by those it takes, and that may resume an upload an
	// earlier run left unfinished.
	Uploader Uploader
}

// Uploader stores blobs in one mirror. Upload has Put's contract (mirrors.Writer): exactly size
// bytes from body under key, no object unless they all arrived, and an error when body fails or
// has another length. It also calls progress, from any goroutine, whenever bytes move towards
// the mirror (any count: it is a sign of life, not a tally), and returns how many bytes of the
// blob it did not send because an earlier, interrupted upload had stored them.
type Uploader interface {
	Upload(ctx context.Context, key string, body io.Reader, size int64, progress func(n int64)) (resumed int64, err error)
}

// DefaultConcurrency is how many blobs are copied (and manifests read) at once when
// Options.Concurrency is zero.
const DefaultConcurrency = 4

// DefaultTimeout bounds one metadata call (a tag list, a manifest, a presence check, a delete)
// when Options.Timeout is zero. Blob copies have no deadline: see Options.Stall.
const DefaultTimeout = 30 * time.Second

// Options tune a Syncer. The zero value copies four blobs at a time with the machine's registry
// credentials, failing a copy that moves no byte for a minute.
type Options struct {
	// Concurrency is how many blobs are copied at once, each to every target that lacks it, and
	// how many manifests are read at once. Zero: DefaultConcurrency.
	Concurrency int
	// DryRun only checks which blobs each target holds; the report's copied counts are then what
	// would be copied.
	DryRun bool
	// Logger receives a line per copied or failed blob and per finished run. Nil: discard.
	Logger *slog.Logger
	// Keychain gives go-containerregistry credentials for its own token flow. Nil: none
	// (anonymous), for a Transport that authenticates by itself, as oci-proxy sync's does.
	Keychain authn.Keychain
	// Transport carries every upstream request. Nil: remote.DefaultTransport. oci-proxy sync
	// passes the upstream clients that proxy mode uses, which do the token flow with each
	// route's credentials.
	Transport http.RoundTripper
	// Timeout bounds each metadata call. Zero: DefaultTimeout.
	Timeout time.Duration
	// Stall ends a blob copy, on one mirror or (the upstream's) on all, once it has moved no
	// byte for this long; a copy that keeps moving takes as long as it needs. Zero:
	// DefaultStall.
	Stall time.Duration
	// Detach is how long the download may wait at a stretch for one mirror while others take
	// it, and, over one blob's copy, in all when that is also more than half of the copy's
	// time: a mirror that held the others back that long reads the rest of the blob from a
	// download of its own, and the others go on at their pace. Zero: DefaultDetach, or a
	// quarter of Stall when that is shorter.
	Detach time.Duration
	// Progress, when set, is kept up to date with every copy, for a display. Nil: none.
	Progress *Progress
}

// DefaultDetach is Options.Detach when it is zero (and Stall is at least four times as long).
const DefaultDetach = 5 * time.Second

// Plan is what a Syncer copies, as the configuration says (internal/app translates it).
type Plan struct {
	// Repositories are copied by All; Ref copies only tags and digests of these.
	Repositories []Repository
	// Skipped are configured mirrors that are not targets, listed in every report with why
	// (disabled, not writable).
	Skipped []SkippedMirror
}

// Repository is one repository to copy, by the name clients use, with tag globs (path.Match
// patterns, already checked); every tag when Tags is empty.
type Repository struct {
	Name string
	Tags []string
}

// SkippedMirror is a configured mirror that sync does not write to, and why.
type SkippedMirror struct {
	Name, Reason string
}

// Syncer copies blobs from the upstream into the targets. It holds no state between runs and is
// safe for concurrent use: a webhook may call Ref while a scheduled All runs (a blob both want is
// then possibly copied twice, to the same bytes).
type Syncer struct {
	plan    Plan
	ups     *upstream.Table
	targets []Target
	opts    Options
	log     *slog.Logger
}

// New returns a Syncer for plan, reading from the upstreams of ups and writing to targets.
func New(plan Plan, ups *upstream.Table, targets []Target, opts Options) *Syncer {
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Stall <= 0 {
		opts.Stall = DefaultStall
	}
	if opts.Detach <= 0 {
		opts.Detach = min(DefaultDetach, opts.Stall/4)
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.NewMultiKeychain() // resolves every registry to anonymous
	}
	if opts.Transport == nil {
		opts.Transport = remote.DefaultTransport
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Syncer{plan: plan, ups: ups, targets: slices.Clone(targets), opts: opts, log: log}
}
