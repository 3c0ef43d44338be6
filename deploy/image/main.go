// Command image assembles the oci-proxy release image from static binaries built beforehand and
// pushes it, without a Docker daemon: one OCI image per platform FROM scratch (the binary, the CA
// certificates, a non-root user, OCI labels), joined in one index. scripts/release.sh builds the
// binaries, chooses the tags and runs it; it is not meant to be run by hand.
//
//	go run ./deploy/image --repo REGISTRY/REPO --tag 1.2.3 [--tag 1.2 ...] \
//	    --binary linux/amd64=PATH --binary linux/arm64=PATH \
//	    --label org.opencontainers.image.version=1.2.3 [--label ...] [--sbom FILE] [--insecure]
//
// The output is a pure function of its inputs: the same binaries, CA certificates, labels and
// creation time (SOURCE_DATE_EPOCH) give the same digest. Credentials come from the Docker
// configuration (~/.docker/config.json and its credential helpers), as for docker push.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "image: %v\n", err)
		}
		os.Exit(1)
	}
}

// list is a repeatable flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	repoFlag := fs.String("repo", "", "repository to push to, REGISTRY/REPO (required)")
	var tags, binaries, labels list
	fs.Var(&tags, "tag", "tag to push (repeatable; at least one)")
	fs.Var(&binaries, "binary", "OS/ARCH=PATH of a static oci-proxy binary (repeatable; at least one)")
	fs.Var(&labels, "label", "KEY=VALUE label and annotation (repeatable)")
	caFile := fs.String("ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA certificate bundle to put at /"+caCertsPath)
	createdFlag := fs.String("created", "", "creation time, RFC 3339 (default: $SOURCE_DATE_EPOCH)")
	sbomFile := fs.String("sbom", "", "write an SPDX 2.3 JSON SBOM of the binaries' Go modules to FILE")
	insecure := fs.Bool("insecure", false, "talk plain HTTP to the registry")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up pushing after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	var nameOpts []name.Option
	if *insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	if *repoFlag == "" {
		return errors.New("--repo is required")
	}
	repo, err := name.NewRepository(*repoFlag, nameOpts...)
	if err != nil {
		return fmt.Errorf("--repo: %w", err)
	}
	if len(tags) == 0 {
		return errors.New("at least one --tag is required")
	}
	refs := make([]name.Tag, len(tags))
	for i, t := range tags {
		if refs[i], err = name.NewTag(repo.String()+":"+t, nameOpts...); err != nil {
			return fmt.Errorf("--tag %q: %w", t, err)
		}
	}
	created, err := creationTime(*createdFlag, os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	spec := Spec{Created: created, Labels: map[string]string{}}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("--label %q is not KEY=VALUE", l)
		}
		spec.Labels[k] = v
	}
	spec.Labels["org.opencontainers.image.created"] = created.UTC().Format(time.RFC3339)
	if spec.CACerts, err = os.ReadFile(*caFile); err != nil {
		return fmt.Errorf("CA certificates: %w", err)
	}
	if len(binaries) == 0 {
		return errors.New("at least one --binary is required")
	}
	var bins []Binary
	for _, b := range binaries {
		p, path, ok := strings.Cut(b, "=")
		if !ok {
			return fmt.Errorf("--binary %q is not OS/ARCH=PATH", b)
		}
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			return fmt.Errorf("--binary %q: %w", b, err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--binary: %w", err)
		}
		if err := CheckBinary(data, *plat); err != nil {
			return fmt.Errorf("--binary %s: %w", path, err)
		}
		bins = append(bins, Binary{Platform: *plat, Data: data})
	}

	idx, err := Index(spec, bins)
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	if *sbomFile != "" {
		doc, err := SBOM(bins, created, spec.Labels["org.opencontainers.image.version"], repo.Digest(digest.String()).String())
		if err != nil {
			return fmt.Errorf("SBOM: %w", err)
		}
		if err := os.WriteFile(*sbomFile, doc, 0o644); err != nil {
			return fmt.Errorf("SBOM: %w", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithUserAgent("oci-proxy-release"),
	}
	// The first tag uploads the blobs and manifests; the others only point at the index.
	if err := remote.WriteIndex(refs[0], idx, opts...); err != nil {
		return fmt.Errorf("push %s: %w", refs[0], err)
	}
	for _, r := range refs[1:] {
		if err := remote.Tag(r, idx, opts...); err != nil {
			return fmt.Errorf("tag %s: %w", r, err)
		}
	}
	fmt.Fprintln(stdout, repo.Digest(digest.String()).String())
	return nil
}

// creationTime reads --created, else SOURCE_DATE_EPOCH (seconds since 1970, the convention of
// reproducible builds). One of them is required: a build that took the clock would never repeat.
func creationTime(flagValue, epoch string) (time.Time, error) {
	switch {
	case flagValue != "":
		t, err := time.Parse(time.RFC3339, flagValue)
		if err != nil {
			return time.Time{}, fmt.Errorf("--created: %w", err)
		}
		return t.UTC(), nil
	case epoch != "":
		s, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil || s < 0 {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds", epoch)
		}
		return time.Unix(s, 0).UTC(), nil
	}
	return time.Time{}, errors.New("--created or SOURCE_DATE_EPOCH is required (scripts/release.sh sets it to the commit time)")
}
