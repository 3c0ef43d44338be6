package syncer

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/happy-turtle/oci-proxy/oci"
)

// All copies the blobs of every tag of every repository in sync.repositories that matches the
// repository's tag globs (every tag when it has none). Problems with one tag, blob or target are
// in the report; the error is only for a run that could not start or was cancelled.
func (s *Syncer) All(ctx context.Context) (Report, error) {
	r := s.newRun()
	for _, sr := range s.plan.Repositories {
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

// Ref copies the blobs of one tag or digest of repo, a name as clients use it. A repository not
// in the plan, or a tag that does not match its globs, is skipped with the reason in the report,
// not an error. A digest is copied whatever the globs: a registry announces the images of an
// index by digest alone.
func (s *Syncer) Ref(ctx context.Context, repo string, rf oci.Reference) (Report, error) {
	return s.RefAt(ctx, repo, rf, oci.Digest{})
}

// RefAt is Ref for a tag whose manifest is known by its digest (a push notification says which
// manifest it put under the tag): the tag decides whether to copy, as in Ref, and the manifest
// is read by the digest, so that a tag not yet (or no longer) pointing at it does not matter.
// A zero digest reads by the tag, as Ref does.
func (s *Syncer) RefAt(ctx context.Context, repo string, rf oci.Reference, at oci.Digest) (Report, error) {
	r := s.newRun()
	reference := rf.String()
	i := slices.IndexFunc(s.plan.Repositories, func(sr Repository) bool { return sr.Name == repo })
	if i < 0 {
		r.skip(Skip{Repository: repo, Ref: reference, Reason: "not in sync.repositories"})
		return s.finish(ctx, r)
	}
	up, err := s.upstreamRepo(repo)
	if err != nil {
		r.fail(repo, reference, err)
		return s.finish(ctx, r)
	}
	switch {
	case rf.IsZero():
		r.fail(repo, reference, errors.New("no tag or digest"))
	case rf.IsDigest():
		r.refs = append(r.refs, ref{client: repo, ref: up.Digest(reference)})
	default:
		if why := tagSkipped(s.plan.Repositories[i], rf.Tag()); why != "" {
			r.skip(Skip{Repository: repo, Ref: reference, Reason: why})
			break
		}
		if !at.IsZero() {
			r.refs = append(r.refs, ref{client: repo, ref: up.Digest(at.String())})
			break
		}
		r.refs = append(r.refs, ref{client: repo, ref: up.Tag(reference)})
	}
	return s.finish(ctx, r)
}

// tagSkipped says why tag is not copied, or "".
func tagSkipped(sr Repository, tag string) string {
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
