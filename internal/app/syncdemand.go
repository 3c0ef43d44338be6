package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/demand"
	"github.com/happy-turtle/oci-proxy/syncer"
)

// Defaults of `oci-proxy sync --demand`.
const (
	// DefaultDemandWindow is a day: every time zone of a region pulls in it, so a region that
	// works by day is not forgotten overnight.
	DefaultDemandWindow = 24 * time.Hour
	// DefaultDemandMin is about two pulls of a five-layer image: one pull may be a one-off,
	// a second is a pattern worth a copy.
	DefaultDemandMin = 10
	// demandFetchTimeout bounds reading one source.
	demandFetchTimeout = 30 * time.Second
)

// demandSync is the part of a Sync that copies into the `sync: demand` mirrors what their
// clients asked for.
type demandSync struct {
	sources   []demand.Source
	min       float64
	window    time.Duration
	mirrors   []string                 // the demand mirrors that sync can write, in table order
	targets   map[string]syncer.Target // by mirror name
	repos     map[string]syncer.Repository
	names     []string // configured repositories, in order
	newSyncer func(syncer.Plan, []syncer.Target) *syncer.Syncer
}

// ParseDemandSources reads the values of --demand or --from.
func ParseDemandSources(vals []string) ([]demand.Source, error) {
	c := &http.Client{Timeout: demandFetchTimeout}
	var out []demand.Source
	for _, v := range vals {
		s, err := demand.ParseSource(v, c)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInput, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// splitTargets separates the writable mirrors that plain sync fills from the demand ones.
func splitTargets(cfg *config.Config, targets []syncer.Target) (all []syncer.Target, byDemand []syncer.Target) {
	mode := map[string]config.SyncMode{}
	for _, m := range cfg.Mirrors {
		mode[m.Name] = m.Sync
	}
	for _, t := range targets {
		if mode[t.Name] == config.SyncDemand {
			byDemand = append(byDemand, t)
		} else {
			all = append(all, t)
		}
	}
	return all, byDemand
}

func fetchDemand(ctx context.Context, sources []demand.Source, window time.Duration) (demand.Data, error) {
	var ds []demand.Data
	for _, src := range sources {
		fctx, cancel := context.WithTimeout(ctx, demandFetchTimeout)
		d, err := src.Fetch(fctx, window)
		cancel()
		if err != nil {
			return demand.Data{}, fmt.Errorf("read demand: %w", err)
		}
		ds = append(ds, d)
	}
	return demand.Merge(ds...), nil
}

// DemandReport is one round of `oci-proxy sync --demand`: what each demand mirror's clients
// missed there, and what was copied because of it. With --json it is printed as one object.
type DemandReport struct {
	Start         time.Time      `json:"start"`
	Sources       []string       `json:"sources"`
	WindowSeconds float64        `json:"window_seconds"`
	Min           float64        `json:"min"`
	Error         string         `json:"error,omitempty"` // the sources could not be read: nothing copied
	Mirrors       []DemandMirror `json:"mirrors"`
}

// DemandMirror is one demand mirror's part of a round; Sync is nil when nothing was copied.
type DemandMirror struct {
	demand.Wanted
	Sync *syncer.Report `json:"sync,omitempty"`
}

// Failures counts what went wrong: an unreadable source, and every failure of the copies.
func (r DemandReport) Failures() int {
	n := 0
	if r.Error != "" {
		n++
	}
	for _, m := range r.Mirrors {
		if m.Sync != nil {
			n += m.Sync.Failures()
		}
	}
	return n
}

// WriteText prints the round for people: the sources and threshold, then per mirror what was
// copied and why, with the copy's own report indented.
func (r DemandReport) WriteText(w io.Writer) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "sync --demand: %s; misses over %s, at least %g\n", strings.Join(r.Sources, ", "), time.Duration(r.WindowSeconds*float64(time.Second)), r.Min)
	if r.Error != "" {
		fmt.Fprintf(&b, "  error: %s (nothing copied)\n", r.Error)
	}
	for _, m := range r.Mirrors {
		if len(m.Copy) == 0 {
			fmt.Fprintf(&b, "  mirror %s: nothing reached %g misses%s\n", m.Mirror, r.Min, belowText(m.Below))
			continue
		}
		fmt.Fprintf(&b, "  mirror %s: copying %s%s\n", m.Mirror, repoList(m.Copy), belowText(m.Below))
		if m.Sync != nil {
			var sb bytes.Buffer
			_ = m.Sync.WriteText(&sb)
			for _, line := range strings.SplitAfter(sb.String(), "\n") {
				if line != "" {
					b.WriteString("    " + line)
				}
			}
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func repoList(rs []demand.RepoDemand) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s (%.4g misses)", r.Repository, r.Misses)
	}
	return strings.Join(parts, ", ")
}

func belowText(rs []demand.RepoDemand) string {
	if len(rs) == 0 {
		return ""
	}
	return "; below the minimum: " + repoList(rs)
}

// round reads the demand and copies, into each demand mirror, the repositories that reached the
// minimum there. Mirrors are copied one after the other, each by a syncer of its own whose plan
// is its wanted repositories, so that no mirror gets what only another's clients asked for.
func (d *demandSync) round(ctx context.Context) (DemandReport, error) {
	rep := DemandReport{Start: time.Now().UTC(), WindowSeconds: d.window.Seconds(), Min: d.min, Mirrors: []DemandMirror{}}
	for _, s := range d.sources {
		rep.Sources = append(rep.Sources, s.String())
	}
	data, err := fetchDemand(ctx, d.sources, d.window)
	if err != nil {
		rep.Error = err.Error()
		return rep, nil
	}
	for _, w := range demand.Want(data, d.mirrors, d.names, d.min) {
		m := DemandMirror{Wanted: w}
		if len(w.Copy) > 0 {
			var plan syncer.Plan
			for _, r := range w.Copy {
				plan.Repositories = append(plan.Repositories, d.repos[r.Repository])
			}
			sr, err := d.newSyncer(plan, []syncer.Target{d.targets[w.Mirror]}).All(ctx)
			m.Sync = &sr
			if err != nil {
				rep.Mirrors = append(rep.Mirrors, m)
				return rep, err
			}
		}
		rep.Mirrors = append(rep.Mirrors, m)
	}
	return rep, nil
}

var errNoDemandMirror = errors.New("no writable mirror says sync: demand: nothing for --demand to fill")
