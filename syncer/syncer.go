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
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// Target is a mirror that blobs are copied into: object key = mirrors.Key(Prefix, digest).
type Target struct {
	Name   string
	Prefix string
	Writer mirrors.Writer
}

// DefaultConcurrency is how many blobs are copied (and manifests read) at once when
// Options.Concurrency is zero.
const DefaultConcurrency = 4

// DefaultTimeout bounds one metadata call (a tag list, a manifest, a presence check, a delete)
// when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// minRate is the slowest transfer, in bytes per second, that a blob copy is allowed before its
// deadline ends it: a copy gets Timeout plus size/minRate.
const minRate = 1 << 20

// Options tune a Syncer. The zero value copies four blobs at a time with the machine's registry
// credentials.
type Options struct {
	// Concurrency is how many blobs are copied at once, each to every target that lacks it, and
	// how many manifests are read at once. Zero: DefaultConcurrency.
	Concurrency int
	// DryRun only checks which blobs each target holds; the report's copied counts are then what
	// would be copied.
	DryRun bool
	// Logger receives a line per copied or failed blob and per finished run. Nil: discard.
	Logger *slog.Logger
	// Keychain authenticates to the upstream registries. Nil: authn.DefaultKeychain (docker's
	// config.json and credential helpers). A route with `auth` in the configuration uses that
	// username and password file instead.
	Keychain authn.Keychain
	// Transport carries every upstream request. Nil: remote.DefaultTransport.
	Transport http.RoundTripper
	// Timeout bounds each metadata call; a blob copy gets Timeout plus one second per MiB.
	// Zero: DefaultTimeout.
	Timeout time.Duration
}

// Syncer copies blobs from the upstream into the targets. It holds no state between runs and is
// safe for concurrent use: a webhook may call Ref while a scheduled All runs (a blob both want is
// then possibly copied twice, to the same bytes).
type Syncer struct {
	cfg     *config.Config
	ups     *upstream.Table
	targets []Target
	skipped []TargetReport // configured mirrors that are not targets
	opts    Options
	log     *slog.Logger
}

// New returns a Syncer for the repositories in cfg.Sync, reading from the upstreams of ups and
// writing to targets. Mirrors of cfg that are not among targets (by name) are listed in every
// report as skipped: "disabled" or "not writable".
func New(cfg *config.Config, ups *upstream.Table, targets []Target, opts Options) *Syncer {
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	if opts.Transport == nil {
		opts.Transport = remote.DefaultTransport
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Syncer{cfg: cfg, ups: ups, targets: slices.Clone(targets), opts: opts, log: log}
	for _, m := range cfg.Mirrors {
		if slices.ContainsFunc(targets, func(t Target) bool { return t.Name == m.Name }) {
			continue
		}
		reason := "not writable (" + m.Provider + " mirror)"
		if !m.IsEnabled() {
			reason = "disabled"
		}
		s.skipped = append(s.skipped, TargetReport{Name: m.Name, Skipped: reason})
	}
	return s
}

// All copies the blobs of every tag of every repository in sync.repositories that matches the
// repository's tag globs (every tag when it has none). Problems with one tag, blob or target are
// in the report; the error is only for a run that could not start or was cancelled.
func (s *Syncer) All(ctx context.Context) (Report, error) {
	r := s.newRun()
	for _, sr := range s.cfg.Sync.Repositories {
		repo, err := s.upstreamRepo(sr.Name)
		if err != nil {
			r.fail(sr.Name, "", err)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		tags, err := r.puller(ctx).List(lctx, repo)
		cancel()
		if err != nil {
			r.fail(sr.Name, "", fmt.Errorf("list tags: %w", err))
			continue
		}
		slices.Sort(tags)
		for _, tag := range tags {
			if why := tagSkipped(sr, tag); why != "" {
				r.skip(Skip{Repository: sr.Name, Ref: tag, Reason: why})
				continue
			}
			r.refs = append(r.refs, ref{client: sr.Name, ref: repo.Tag(tag)})
		}
	}
	return s.finish(ctx, r)
}

// Ref copies the blobs of one tag or digest ("sha256:...") of repo, a name as clients use it. A
// repository not in sync.repositories, or a tag that does not match its globs, is skipped with
// the reason in the report, not an error. A digest is copied whatever the globs: a registry
// announces the images of an index by digest alone.
func (s *Syncer) Ref(ctx context.Context, repo, reference string) (Report, error) {
	r := s.newRun()
	i := slices.IndexFunc(s.cfg.Sync.Repositories, func(sr config.SyncRepository) bool { return sr.Name == repo })
	if i < 0 {
		r.skip(Skip{Repository: repo, Ref: reference, Reason: "not in sync.repositories"})
		return s.finish(ctx, r)
	}
	up, err := s.upstreamRepo(repo)
	if err != nil {
		r.fail(repo, reference, err)
		return s.finish(ctx, r)
	}
	if oci.LooksLikeDigest(reference) {
		d, err := oci.ParseDigest(reference)
		if err != nil {
			r.fail(repo, reference, err)
			return s.finish(ctx, r)
		}
		r.refs = append(r.refs, ref{client: repo, ref: up.Digest(d.String())})
		return s.finish(ctx, r)
	}
	if err := oci.ValidateTag(reference); err != nil {
		r.fail(repo, reference, err)
		return s.finish(ctx, r)
	}
	if why := tagSkipped(s.cfg.Sync.Repositories[i], reference); why != "" {
		r.skip(Skip{Repository: repo, Ref: reference, Reason: why})
		return s.finish(ctx, r)
	}
	r.refs = append(r.refs, ref{client: repo, ref: up.Tag(reference)})
	return s.finish(ctx, r)
}

// tagSkipped says why tag is not copied, or "".
func tagSkipped(sr config.SyncRepository, tag string) string {
	if len(sr.Tags) == 0 {
		return ""
	}
	for _, g := range sr.Tags {
		if ok, _ := path.Match(g, tag); ok { // config validated the globs
			return ""
		}
	}
	return "tag matches none of " + strings.Join(sr.Tags, ", ")
}

// upstreamRepo maps a client name to the upstream repository that holds it.
func (s *Syncer) upstreamRepo(client string) (name.Repository, error) {
	route, upName := s.ups.Lookup(client)
	host, repo := route.Repository(upName)
	var opts []name.Option
	if route.Base.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	r, err := name.NewRepository(host+"/"+repo, opts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("upstream repository %s/%s: %w", host, repo, err)
	}
	return r, nil
}

// ref is one tag or digest to copy, with the client name it was asked for by.
type ref struct {
	client string
	ref    name.Reference
}

// blob is one blob to copy, and where to fetch it.
type blob struct {
	desc v1.Descriptor
	repo name.Repository
}

// run is the state of one All or Ref.
type run struct {
	start   time.Time
	refs    []ref
	pullerv *remote.Puller
	pullErr error
	once    sync.Once
	s       *Syncer

	mu        sync.Mutex
	report    Report
	manifests map[v1.Hash]bool
	blobs     map[v1.Hash]*blob
	order     []v1.Hash
}

func (s *Syncer) newRun() *run {
	r := &run{
		start:     time.Now(),
		s:         s,
		manifests: map[v1.Hash]bool{},
		blobs:     map[v1.Hash]*blob{},
	}
	r.report.DryRun = s.opts.DryRun
	r.report.Start = r.start.UTC()
	for _, t := range s.targets {
		r.report.Targets = append(r.report.Targets, TargetReport{Name: t.Name})
	}
	r.report.Targets = append(r.report.Targets, s.skipped...)
	return r
}

// puller returns the run's upstream client: one per run, so that tokens are fetched once per
// repository and never outlive a scheduled run.
func (r *run) puller(ctx context.Context) *remote.Puller {
	r.once.Do(func() {
		kc, err := r.s.keychain()
		if err != nil {
			r.pullErr = err
			kc = r.s.opts.Keychain
		}
		p, err := remote.NewPuller(
			remote.WithAuthFromKeychain(kc),
			remote.WithTransport(r.s.opts.Transport),
			remote.WithUserAgent("oci-proxy-sync"),
			remote.WithJobs(1),
		)
		if err != nil {
			// NewPuller fails only on invalid options, which are fixed here.
			panic(err)
		}
		r.pullerv = p
	})
	if r.pullErr != nil {
		r.fail("", "", r.pullErr)
		r.pullErr = nil
	}
	return r.pullerv
}

func (r *run) skip(sk Skip) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report.Skipped = append(r.report.Skipped, sk)
}

func (r *run) fail(repo, reference string, err error) {
	r.mu.Lock()
	r.report.Errors = append(r.report.Errors, Problem{Repository: repo, Ref: reference, Reason: short(err)})
	r.mu.Unlock()
	r.s.log.Warn("sync: upstream", slog.String("repository", repo), slog.String("ref", reference), slog.String("reason", short(err)))
}

// finish reads every manifest of r.refs, then copies every blob they name to every target.
func (s *Syncer) finish(ctx context.Context, r *run) (Report, error) {
	p := r.puller(ctx)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.opts.Concurrency)
	for _, rf := range r.refs {
		g.Go(func() error {
			if err := r.walk(gctx, p, rf, rf.ref, 0); err != nil {
				r.fail(rf.client, refString(rf.ref), err)
			}
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return r.done(), fmt.Errorf("sync: %w", err)
	}
	r.report.Blobs = len(r.order)

	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(s.opts.Concurrency)
	for _, h := range r.order {
		b := r.blobs[h]
		g.Go(func() error {
			r.copyBlob(gctx, p, b)
			return nil
		})
	}
	_ = g.Wait()
	rep := r.done()
	s.log.Info("sync: done", slog.Bool("dry_run", rep.DryRun), slog.Int("blobs", rep.Blobs),
		slog.Int("copied", rep.copied()), slog.Int("failed", rep.Failures()), slog.Duration("took", time.Since(r.start)))
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("sync: %w", err)
	}
	return rep, nil
}

func (r *run) done() Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report.Seconds = time.Since(r.start).Seconds()
	return r.report
}

func refString(rf name.Reference) string { return rf.Identifier() }

// maxDepth bounds nested indexes: real ones are one level deep.
const maxDepth = 4

// manifest is the part of any image manifest or index that names blobs and children.
type manifest struct {
	MediaType types.MediaType `json:"mediaType"`
	Config    *v1.Descriptor  `json:"config"`
	Layers    []v1.Descriptor `json:"layers"`
	Manifests []v1.Descriptor `json:"manifests"`
}

// walk reads the manifest at at (a tag, or a digest of rf's repository) and records its blobs,
// descending into indexes.
func (r *run) walk(ctx context.Context, p *remote.Puller, rf ref, at name.Reference, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("manifest %s: indexes nested more than %d deep", at.Identifier(), maxDepth)
	}
	gctx, cancel := context.WithTimeout(ctx, r.s.opts.Timeout)
	desc, err := p.Get(gctx, at)
	cancel()
	if err != nil {
		return fmt.Errorf("get manifest: %w", err)
	}
	r.mu.Lock()
	seen := r.manifests[desc.Digest]
	r.manifests[desc.Digest] = true
	if !seen {
		r.report.Manifests++
	}
	r.mu.Unlock()
	if seen {
		return nil
	}
	if desc.MediaType.IsSchema1() {
		r.skip(Skip{Repository: rf.client, Ref: at.Identifier(), Reason: "schema 1 manifest"})
		return nil
	}
	var m manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	repo := at.Context()
	if desc.MediaType.IsIndex() || (m.Config == nil && len(m.Manifests) > 0) {
		var errs []error
		for _, c := range m.Manifests {
			if err := r.walk(ctx, p, rf, repo.Digest(c.Digest.String()), depth+1); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", c.Digest, err))
			}
		}
		return errors.Join(errs...)
	}
	if m.Config == nil {
		r.skip(Skip{Repository: rf.client, Ref: at.Identifier(), Reason: "manifest of type " + string(desc.MediaType) + " names no blobs"})
		return nil
	}
	r.add(rf, repo, *m.Config)
	for _, l := range m.Layers {
		r.add(rf, repo, l)
	}
	return nil
}

// add records a blob to copy, once however many manifests name it.
func (r *run) add(rf ref, repo name.Repository, d v1.Descriptor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.blobs[d.Digest]; ok {
		return
	}
	var why string
	switch {
	case !d.MediaType.IsDistributable() || len(d.URLs) > 0:
		why = "non-distributable layer"
	case d.Size < 0:
		why = "negative size"
	case newHash(d.Digest.Algorithm) == nil:
		why = "unsupported digest algorithm"
	}
	if _, err := oci.ParseDigest(d.Digest.String()); err != nil && why == "" {
		why = "invalid digest"
	}
	r.blobs[d.Digest] = &blob{desc: d, repo: repo}
	if why != "" {
		r.report.Skipped = append(r.report.Skipped, Skip{Repository: rf.client, Digest: d.Digest.String(), Reason: why})
		return
	}
	r.order = append(r.order, d.Digest)
}

func newHash(alg string) hash.Hash {
	switch alg {
	case "sha256":
		return sha256.New()
	case "sha512":
		return sha512.New()
	}
	return nil
}

// tally records one blob's outcome on target i.
func (r *run) tally(i int, b *blob, copied bool, err error) {
	d := b.desc.Digest.String()
	t := r.s.targets[i]
	r.mu.Lock()
	tr := &r.report.Targets[i]
	switch {
	case err != nil:
		tr.Failed = append(tr.Failed, Problem{Digest: d, Reason: short(err)})
	case copied:
		tr.Copied++
		tr.CopiedBytes += b.desc.Size
	default:
		tr.Present++
	}
	r.mu.Unlock()
	switch {
	case err != nil:
		r.s.log.Warn("sync: blob failed", slog.String("mirror", t.Name), slog.String("digest", d), slog.String("reason", short(err)))
	case copied && !r.s.opts.DryRun:
		r.s.log.Debug("sync: blob copied", slog.String("mirror", t.Name), slog.String("digest", d), slog.Int64("bytes", b.desc.Size))
	}
}

// copyBlob checks every target for b and copies it, in one download, to those that lack it.
func (r *run) copyBlob(ctx context.Context, p *remote.Puller, b *blob) {
	var missing []int
	for i, t := range r.s.targets {
		key := mirrors.Key(t.Prefix, mustDigest(b.desc.Digest))
		sctx, cancel := context.WithTimeout(ctx, r.s.opts.Timeout)
		obj, err := t.Writer.Stat(sctx, key)
		cancel()
		switch {
		case err != nil:
			r.tally(i, b, false, fmt.Errorf("stat: %w", err))
		case obj.Exists && (obj.Size < 0 || obj.Size == b.desc.Size):
			r.tally(i, b, false, nil)
		case r.s.opts.DryRun:
			r.tally(i, b, true, nil)
		default:
			// Absent, or stored with the wrong size: written again.
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return
	}
	errs := r.transfer(ctx, p, b, missing)
	for j, i := range missing {
		r.tally(i, b, errs[j] == nil, errs[j])
	}
}

func mustDigest(h v1.Hash) oci.Digest {
	d, err := oci.ParseDigest(h.String())
	if err != nil {
		// add admits only digests that parse.
		panic(err)
	}
	return d
}

// errMismatch is what the targets' uploads read instead of the end of a blob whose bytes do not
// hash to its digest, so that they abandon the upload rather than complete it.
var errMismatch = errors.New("upstream sent content that does not match the digest")

// transfer downloads b once and streams it into the targets listed (indexes into r.s.targets)
// at the same time, checking its size and digest as it goes. The slowest target paces the
// download; a target that fails drops out without stopping the others. Only when the whole blob
// has arrived and checks out do the targets' uploads see its end; otherwise they fail, and the
// key is deleted in case a target stored something anyway. It returns one error per target.
func (r *run) transfer(ctx context.Context, p *remote.Puller, b *blob, targets []int) []error {
	errs := make([]error, len(targets))
	setAll := func(err error) {
		for j := range errs {
			errs[j] = err
		}
	}
	size := b.desc.Size
	ctx, cancel := context.WithTimeout(ctx, r.s.opts.Timeout+time.Duration(size/minRate)*time.Second)
	defer cancel()
	dref := b.repo.Digest(b.desc.Digest.String())
	layer, err := p.Layer(ctx, dref)
	if err != nil {
		setAll(fmt.Errorf("fetch from upstream: %w", err))
		return errs
	}
	body, err := layer.Compressed()
	if err != nil {
		setAll(fmt.Errorf("fetch from upstream: %w", err))
		return errs
	}
	defer body.Close()

	type upload struct {
		pw   *io.PipeWriter
		done chan error
		dead bool
		key  string
	}
	ups := make([]*upload, len(targets))
	for j, i := range targets {
		t := r.s.targets[i]
		pr, pw := io.Pipe()
		u := &upload{pw: pw, done: make(chan error, 1), key: mirrors.Key(t.Prefix, mustDigest(b.desc.Digest))}
		ups[j] = u
		go func() {
			err := t.Writer.Put(ctx, u.key, pr, size)
			if err == nil {
				err = errors.New("upload ended before the blob did") // unblocks the writer
				pr.CloseWithError(err)
				u.done <- nil
				return
			}
			pr.CloseWithError(err)
			u.done <- err
		}()
	}

	h := newHash(b.desc.Digest.Algorithm)
	buf := make([]byte, 256<<10)
	var n int64
	var readErr error
	stopped := false // every target failed: reading on is pointless
	for {
		m, err := body.Read(buf)
		if m > 0 {
			h.Write(buf[:m])
			n += int64(m)
			if n > size {
				readErr = errMismatch
				break
			}
			live := 0
			for _, u := range ups {
				if u.dead {
					continue
				}
				if _, werr := u.pw.Write(buf[:m]); werr != nil {
					u.dead = true
					continue
				}
				live++
			}
			if live == 0 {
				stopped = true
				break
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	got := fmt.Sprintf("%s:%x", b.desc.Digest.Algorithm, h.Sum(nil))
	// go-containerregistry checks the digest too and reports a mismatch as a read error at the
	// end; judged here from the bytes, so that the reason is the same either way.
	if n > size || (n == size && got != b.desc.Digest.String()) {
		readErr = errMismatch
	} else if readErr == nil && n < size && !stopped {
		readErr = fmt.Errorf("upstream sent %d of %d bytes", n, size)
	}
	for _, u := range ups {
		if readErr != nil {
			u.pw.CloseWithError(readErr)
		} else {
			u.pw.Close()
		}
	}
	for j, u := range ups {
		perr := <-u.done
		switch {
		case readErr != nil:
			errs[j] = readErr
			if !errors.Is(readErr, errMismatch) {
				errs[j] = fmt.Errorf("fetch from upstream: %w", readErr)
			}
		case perr != nil:
			errs[j] = fmt.Errorf("put: %w", perr)
		}
	}
	if errors.Is(readErr, errMismatch) {
		for j, i := range targets {
			t := r.s.targets[i]
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), r.s.opts.Timeout)
			if err := t.Writer.Delete(dctx, ups[j].key); err != nil {
				errs[j] = fmt.Errorf("%w; and delete: %w", errs[j], err)
			}
			dcancel()
		}
	}
	return errs
}

// keychain is the configured keychain, with the `auth` of configuration routes put first for
// the upstream repositories they serve.
func (s *Syncer) keychain() (authn.Keychain, error) {
	kc := routeKeychain{next: s.opts.Keychain}
	var errs []error
	for _, r := range s.cfg.Routes {
		if r.Auth.Username == "" || r.UpstreamURL == nil {
			continue
		}
		pw, err := os.ReadFile(r.Auth.PasswordFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %q: password file: %w", r.Prefix, err))
			continue
		}
		kc.routes = append(kc.routes, routeAuth{
			host:   r.UpstreamURL.Host,
			prefix: strings.TrimPrefix(r.UpstreamURL.Path, "/v2/"),
			auth:   &authn.Basic{Username: r.Auth.Username, Password: strings.TrimSpace(string(pw))},
		})
	}
	return kc, errors.Join(errs...)
}

type routeAuth struct {
	host, prefix string
	auth         authn.Authenticator
}

type routeKeychain struct {
	routes []routeAuth
	next   authn.Keychain
}

func (k routeKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	repo, _ := res.(name.Repository)
	for _, r := range k.routes {
		if res.RegistryStr() == r.host && strings.HasPrefix(repo.RepositoryStr(), r.prefix) {
			return r.auth, nil
		}
	}
	return k.next.Resolve(res)
}

// short keeps a reason to one line of reasonable length.
func short(err error) string {
	const limit = 300
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return s
}
