package syncer

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/happy-turtle/oci-proxy/internal/brief"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
)

// maxReason bounds the reasons in reports and log lines: one line a reader can take in.
const maxReason = 300

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
	once    sync.Once
	s       *Syncer

	mu        sync.Mutex
	report    Report
	spans     []span // by target, as r.report.Targets
	manifests map[v1.Hash]bool
	blobs     map[v1.Hash]*blob
	order     []v1.Hash
}

// span is when a target was first and last being written to in a run.
type span struct{ first, last time.Time }

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
	r.spans = make([]span, len(s.targets))
	for _, sk := range s.plan.Skipped {
		r.report.Targets = append(r.report.Targets, TargetReport{Name: sk.Name, Skipped: sk.Reason})
	}
	return r
}

// puller returns the run's upstream client: one per run, so that tokens are fetched once per
// repository and never outlive a scheduled run.
func (r *run) puller(ctx context.Context) *remote.Puller {
	r.once.Do(func() {
		kc := r.s.opts.Keychain
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
	return r.pullerv
}

func (r *run) skip(sk Skip) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report.Skipped = append(r.report.Skipped, sk)
}

func (r *run) fail(repo, reference string, err error) {
	r.mu.Lock()
	r.report.Errors = append(r.report.Errors, Problem{Repository: repo, Ref: reference, Reason: brief.Error(err, maxReason)})
	r.mu.Unlock()
	r.s.log.Warn("sync: upstream", slog.String("repository", repo), slog.String("ref", reference), slog.String("err", brief.Error(err, maxReason)))
}

// finish reads every manifest of r.refs, then copies every blob they name to every target. The
// probe objects are written meanwhile (writeProbes).
func (s *Syncer) finish(ctx context.Context, r *run) (Report, error) {
	defer r.writeProbes(ctx)()
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
	// Small blobs first: a config or a small layer is done in a moment, and must not wait
	// for a slot behind layers of gigabytes. Ties keep the manifests' order.
	slices.SortStableFunc(r.order, func(a, b v1.Hash) int { return cmp.Compare(r.blobs[a].desc.Size, r.blobs[b].desc.Size) })
	var planned int64
	for _, h := range r.order {
		planned += r.blobs[h].desc.Size
	}
	s.opts.Progress.plan(len(r.order), planned)

	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(s.opts.Concurrency)
	stop := stopOf(ctx)
	for _, h := range r.order {
		b := r.blobs[h]
		g.Go(func() error {
			select {
			case <-stop:
				r.notStarted()
				s.opts.Progress.settle(b.desc.Size)
				return nil
			default:
			}
			r.copyBlob(gctx, p, b)
			return nil
		})
	}
	_ = g.Wait()
	rep := r.done()
	if rep.NotStarted > 0 {
		s.log.Info("sync: stopped", slog.Int("not_started", rep.NotStarted))
	}
	s.log.Info("sync: done", slog.Bool("dry_run", rep.DryRun), slog.Int("blobs", rep.Blobs),
		slog.Int("copied", rep.copied()), slog.Int("failed", rep.Failures()), slog.Duration("took", time.Since(r.start)))
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("sync: %w", err)
	}
	return rep, nil
}

func (r *run) notStarted() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report.NotStarted++
}

type stopKey struct{}

// WithStop returns ctx carrying stop: once stop is closed, a run given the returned context
// starts no new blob copy (they are counted in Report.NotStarted), while the copies under way
// go on until they finish or ctx ends. That is how a stopping sync lets a large upload complete
// instead of abandoning it.
func WithStop(ctx context.Context, stop <-chan struct{}) context.Context {
	return context.WithValue(ctx, stopKey{}, stop)
}

func stopOf(ctx context.Context) <-chan struct{} {
	stop, _ := ctx.Value(stopKey{}).(<-chan struct{})
	return stop // nil: never
}

func (r *run) done() Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.report.Seconds = time.Since(r.start).Seconds()
	rep := r.report
	rep.Targets = slices.Clone(rep.Targets)
	for i, sp := range r.spans {
		if !sp.first.IsZero() {
			rep.Targets[i].Seconds = sp.last.Sub(sp.first).Seconds()
		}
	}
	return rep
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

// tally records one blob's outcome on target i: copied (or, in a dry run, to be copied) when
// o is not nil, present otherwise.
func (r *run) tally(i int, b *blob, o *outcome) {
	d := b.desc.Digest.String()
	t := r.s.targets[i]
	r.mu.Lock()
	tr := &r.report.Targets[i]
	var err error
	switch {
	case o == nil:
		tr.Present++
	case o.err != nil:
		err = o.err
		tr.Failed = append(tr.Failed, Problem{Digest: d, Reason: brief.Error(err, maxReason)})
	default:
		tr.Copied++
		tr.CopiedBytes += b.desc.Size
		tr.ResumedBytes += o.resumed
	}
	if o != nil && !o.start.IsZero() {
		sp := &r.spans[i]
		if sp.first.IsZero() || o.start.Before(sp.first) {
			sp.first = o.start
		}
		if o.end.After(sp.last) {
			sp.last = o.end
		}
	}
	r.mu.Unlock()
	switch {
	case err != nil:
		r.s.log.Warn("sync: blob failed", slog.String("mirror", t.Name), slog.String("digest", d), slog.String("err", brief.Error(err, maxReason)))
	case o != nil && !r.s.opts.DryRun:
		attrs := []any{slog.String("mirror", t.Name), slog.String("digest", d), slog.Int64("bytes", b.desc.Size),
			slog.Duration("took", o.end.Sub(o.start).Round(time.Millisecond))}
		if o.resumed > 0 {
			attrs = append(attrs, slog.Int64("resumed_bytes", o.resumed))
		}
		r.s.log.Debug("sync: blob copied", attrs...)
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
		if errors.Is(err, mirrors.ErrDenied) {
			// What a writer that may not list the bucket is told of a missing key: writing it is
			// how to find out.
			obj, err = mirrors.Object{Size: -1}, nil
		}
		switch {
		case err != nil:
			r.tally(i, b, &outcome{err: fmt.Errorf("stat: %w", err)})
		case obj.Exists && (obj.Size < 0 || obj.Size == b.desc.Size):
			r.tally(i, b, nil)
		case r.s.opts.DryRun:
			r.tally(i, b, &outcome{})
		default:
			// Absent, or stored with the wrong size: written again.
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		r.s.opts.Progress.settle(b.desc.Size)
		return
	}
	outs := r.transfer(ctx, p, b, missing)
	for j, i := range missing {
		r.tally(i, b, &outs[j])
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
