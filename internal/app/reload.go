package app

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
)

// DefaultReloadInterval is how often the configuration's files are checked for changes.
const DefaultReloadInterval = 5 * time.Second

// retireAfter is how long a replaced generation's databases and mirror clients stay open:
// requests that began on it finish in microseconds, but a slow presence check may hold it for its
// timeout. Closing it then also closes its clients' idle connections, which would otherwise stay
// open (each holding goroutines) until they time out, for every reload.
const retireAfter = 30 * time.Second

// Watch makes the service reloadable from path (with the overrides of the environment and of
// listen, as LoadServeConfig applies them): Reload reads it again,
// and Run checks every `every` whether it, a GeoIP database, a cloud range file or a credentials
// file it names has changed (every <= 0: never; Reload still works). Call before Run.
func (s *Service) Watch(path, listen string, every time.Duration) {
	s.path, s.ov, s.every = path, overrides(listen), every
}

func (s *Service) watch(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := fileStamps(s.cur.Load().cfg)
		if now.equal(s.cur.Load().files) {
			continue
		}
		s.reloadMu.Lock()
		seen := s.failed != nil && now.equal(s.failed)
		s.reloadMu.Unlock()
		if seen {
			continue // refused already; wait for the next edit
		}
		_ = s.Reload(ctx) // logged and counted by Reload
	}
}

// Reload reads the configuration file again and, if it and everything it names are valid,
// replaces the running generation. A bad file is refused with every problem logged, and the
// running configuration stays. Listen addresses are bound once: changing them needs a restart.
func (s *Service) Reload(ctx context.Context) error { return s.reload(ctx, retireAfter) }

// reload is Reload, closing the replaced generation after retire.
func (s *Service) reload(ctx context.Context, retire time.Duration) error {
	if s.path == "" {
		return fmt.Errorf("reload: the configuration did not come from a file")
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.cur.Load()
	// Stamped before anything is read: a file that changes while this reload reads it is then
	// seen as changed again, rather than as already handled.
	before := fileStamps(old.cfg)
	cfg, err := config.Load(s.path, s.ov)
	if err == nil {
		keepListeners(s, old.cfg, cfg)
		var g *generation
		if g, err = s.build(ctx, cfg); err == nil {
			s.swap(old, g, retire)
			s.failed = nil
			s.metrics.reloaded(true)
			s.log.Info("configuration reloaded", "file", s.path, "mirrors", len(cfg.Mirrors))
			return nil
		}
	}
	// Remember what was refused so the watcher does not retry it until a file changes again. The
	// stamps come from the old configuration's files plus the file itself, which is what changed.
	s.failed = before
	s.metrics.reloaded(false)
	s.log.Error("configuration refused; the running one stays", "file", s.path, "err", err.Error())
	return err
}

func keepListeners(s *Service, old, cfg *config.Config) {
	if cfg.Listen != old.Listen {
		s.log.Warn("listen changed: restart to apply", "running", old.Listen, "file", cfg.Listen)
		cfg.Listen = old.Listen
	}
	if cfg.Admin.Listen != old.Admin.Listen {
		s.log.Warn("admin.listen changed: restart to apply", "running", old.Admin.Listen, "file", cfg.Admin.Listen)
		cfg.Admin.Listen = old.Admin.Listen
	}
}

// swap makes g current, starts its background work if the service runs, and closes old after
// retire.
func (s *Service) swap(old, g *generation, retire time.Duration) {
	s.metrics.SetSelector(g.parts.Selector)
	s.cur.Store(g)
	if old.stop != nil {
		s.start(s.runCtx, g)
		old.stop()
	}
	time.AfterFunc(retire, func() {
		if err := old.parts.Close(); err != nil {
			s.log.Warn("close replaced configuration", "err", err.Error())
		}
	})
}

// stamp is what tells a changed file: size and modification time (through symlinks, so that the
// atomic symlink swap of a Kubernetes ConfigMap counts).
type stamp struct {
	path string
	size int64
	mod  time.Time
	err  bool
}

type stamps []stamp

func (a stamps) equal(b stamps) bool { return slices.Equal(a, b) }

// fileStamps lists the files cfg was built from.
func fileStamps(cfg *config.Config) stamps {
	paths := []string{cfg.File, cfg.GeoIP.Database, cfg.GeoIP.ASNDatabase}
	for _, r := range cfg.CloudRanges {
		paths = append(paths, r.File)
	}
	for _, m := range cfg.Mirrors {
		paths = append(paths, m.CredentialsFile)
	}
	var st stamps
	for _, p := range paths {
		if p == "" || p == config.EnvFile {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			st = append(st, stamp{path: p, err: true})
			continue
		}
		st = append(st, stamp{path: p, size: fi.Size(), mod: fi.ModTime()})
	}
	return st
}
