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
// (s3, gcs), with the same constructors and credentials as the service. Mirrors left out (http,
// disabled) are listed by syncer.New in its reports. Close releases the backends' clients.
func Writers(ctx context.Context, cfg *config.Config) ([]syncer.Target, io.Closer, error) {
	hc := newHTTPClient(cfg.Presence.Timeout)
	var (
		targets []syncer.Target
		closers closeAll
	)
	for _, mc := range cfg.Mirrors {
		if !mc.IsEnabled() {
			continue
		}
		b, err := newBackend(ctx, mc, cfg, hc)
		if err != nil {
			closers.Close()
			return nil, nil, err
		}
		w, ok := b.(mirrors.Writer)
		if c, isCloser := b.(io.Closer); isCloser {
			if !ok {
				c.Close()
				continue
			}
			closers = append(closers, c)
		}
		if ok {
			targets = append(targets, syncer.Target{Name: mc.Name, Prefix: mc.Prefix, Writer: w})
		}
	}
	return targets, closers, nil
}

type closeAll []io.Closer

func (cs closeAll) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
