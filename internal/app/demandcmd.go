package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/happy-turtle/oci-proxy/demand"
)

// DemandQuery is what `oci-proxy demand` reads: sources (prometheus=URL or /_/demand URLs) and
// the window for Prometheus.
type DemandQuery struct {
	From   []string
	Window time.Duration // 0: DefaultDemandWindow
	JSON   bool
}

// Demand prints, for the configuration at path, the analysis of the demand read from q.From:
// per mirror the requests served and missed, per client continent the share served on the
// continent and the median distance, and where a new mirror would help most.
func Demand(ctx context.Context, path string, q DemandQuery, w io.Writer) error {
	if len(q.From) == 0 {
		return fmt.Errorf("%w: --from is required (prometheus=URL, or a proxy's /_/demand URL)", ErrInput)
	}
	sources, err := ParseDemandSources(q.From)
	if err != nil {
		return err
	}
	if q.Window <= 0 {
		q.Window = DefaultDemandWindow
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		return err
	}
	d, err := fetchDemand(ctx, sources, q.Window)
	if err != nil {
		return err
	}
	var ms []demand.MirrorInfo
	for _, m := range cfg.Mirrors {
		if m.Enabled {
			ms = append(ms, demand.MirrorInfo{Name: m.Name, Continent: m.Continent, Sync: m.Sync.String()})
		}
	}
	var names []string
	window := 0.0
	for _, s := range sources {
		names = append(names, s.String())
		if _, ok := s.(*demand.Prometheus); ok {
			window = q.Window.Seconds()
		}
	}
	a := demand.Analyze(d, ms, names, window)
	if q.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(a)
	}
	return a.WriteText(w)
}
