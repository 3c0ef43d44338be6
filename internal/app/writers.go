package app

import (
	"context"
	"errors"
	"io"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/syncer"
)

// Writers builds the sync targets of cfg: every enabled mirror whose backend can store blobs
// (s3, gcs), with the same constructors and credentials as the service. The mirrors left out
// (http, disabled) are in syncPlan's Skipped. Close releases the backends' clients.
func Writers(ctx context.Context, cfg *config.Config) ([]syncer.Target, io.Closer, error) {
	hc := newHTTPClient(cfg.Presence.Timeout)
	var (
		targets []syncer.Target
		closers closeAll
	)
	for _, mc := range cfg.Mirrors {
		if !mc.Enabled || mc.Provider == config.HTTP {
			continue
		}
		b, err := newBackend(ctx, mc, cfg.Presence.Timeout, hc)
		if err != nil {
			closers.Close()
			return nil, nil, err
		}
		if c, ok := b.(io.Closer); ok {
			closers = append(closers, c)
		}
		if w, ok := b.(mirrors.Writer); ok {
			targets = append(targets, syncer.Target{Name: mc.Name, Prefix: mc.Prefix, Writer: w})
		}
	}
	return targets, closers, nil
}

// syncPlan translates the configuration's sync section and its mirror table into what the
// syncer needs. Mirrors that are not among targets are listed as
// skipped, with why.
func syncPlan(cfg *config.Config, targets []syncer.Target) syncer.Plan {
	var p syncer.Plan
	for _, r := range cfg.Sync.Repositories {
		p.Repositories = append(p.Repositories, syncer.Repository{Name: r.Name, Tags: r.Tags})
	}
	isTarget := map[string]bool{}
	for _, t := range targets {
		isTarget[t.Name] = true
	}
	for _, m := range cfg.Mirrors {
		switch {
		case isTarget[m.Name]:
		case !m.Enabled:
			p.Skipped = append(p.Skipped, syncer.SkippedMirror{Name: m.Name, Reason: "disabled"})
		case m.Sync == config.SyncDemand:
			p.Skipped = append(p.Skipped, syncer.SkippedMirror{Name: m.Name, Reason: "sync: demand (filled by sync --demand)"})
		default:
			p.Skipped = append(p.Skipped, syncer.SkippedMirror{Name: m.Name, Reason: "not writable (" + m.Provider.String() + " mirror)"})
		}
	}
	return p
}

type closeAll []io.Closer

func (cs closeAll) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
