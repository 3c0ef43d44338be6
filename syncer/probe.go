package syncer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/happy-turtle/oci-proxy/internal/brief"
	"github.com/happy-turtle/oci-proxy/mirrors"
)

// writeProbes stores mirrors.ProbeContent under mirrors.ProbeKey in every target, in the
// background, and returns a function that waits for the writes. The probe object is what the
// service asks about to tell a mirror whose storage service refuses its credentials from an
// empty one; writing it on every run keeps it there whatever deletes objects in the bucket. A
// dry run writes nothing. A target that refuses it is logged, not counted as a failure of the
// run: the blobs are what the run is for, and a policy that lets sync write only blobs is a
// reason to see the warning, not to fail every run.
func (r *run) writeProbes(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	if r.s.opts.DryRun {
		return wg.Wait
	}
	for _, t := range r.s.targets {
		wg.Go(func() {
			key := mirrors.ProbeKey(t.Prefix)
			pctx, cancel := context.WithTimeout(ctx, r.s.opts.Timeout)
			defer cancel()
			err := t.Writer.Put(pctx, key, strings.NewReader(mirrors.ProbeContent), int64(len(mirrors.ProbeContent)))
			if err != nil {
				r.s.log.Warn("sync: probe object not written: the service cannot check this mirror's credentials",
					slog.String("mirror", t.Name), slog.String("key", key),
					slog.String("err", brief.Error(fmt.Errorf("put: %w", err), maxReason)))
			}
		})
	}
	return wg.Wait
}
