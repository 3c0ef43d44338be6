package demand

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// MirrorInfo is what the analysis needs to know of a configured mirror.
type MirrorInfo struct {
	Name      string
	Continent string // "" when not placed
	Sync      string // all or demand
}

// Analysis is `oci-proxy demand`'s answer: how blob requests were served, and where more mirrors
// (or copies) would bring them closer.
type Analysis struct {
	Sources       []string `json:"sources"`
	WindowSeconds float64  `json:"window_seconds,omitempty"` // 0 for /_/demand sources alone
	// Mirrors are the configured mirrors in table order, then the upstream.
	Mirrors    []MirrorDemand    `json:"mirrors"`
	Continents []ContinentDemand `json:"continents"`
	// NewMirror ranks the client continents by how much a mirror there would shorten the
	// distances of their requests, most first; continents it would not help are left out.
	NewMirror []Suggestion `json:"new_mirror"`
}

// MirrorDemand is one mirror's requests: served, and missed (it ranked first and lacked the
// blob), per repository.
type MirrorDemand struct {
	Mirror       string       `json:"mirror"`
	Continent    string       `json:"continent,omitempty"`
	Sync         string       `json:"sync,omitempty"`
	Served       float64      `json:"served"`
	Missed       float64      `json:"missed"`
	Repositories []RepoDemand `json:"repositories,omitempty"` // misses by repository
}

// ContinentDemand is how the blob requests of clients on one continent were served.
type ContinentDemand struct {
	Continent string  `json:"continent"`
	Requests  float64 `json:"requests"`
	// OnContinent is the share of Requests served by a mirror on the same continent.
	OnContinent float64 `json:"on_continent"`
	// Upstream is the share served by the upstream.
	Upstream float64 `json:"upstream"`
	// MedianKm is the median distance to the mirror that served (from the histogram, as
	// Prometheus' histogram_quantile interpolates it); nil without distances.
	MedianKm *float64 `json:"median_km,omitempty"`
}

// Suggestion is a continent a new mirror would serve better.
type Suggestion struct {
	Continent string `json:"continent"`
	// SavedKm estimates the distance a mirror on the continent would save its clients in total
	// (km × requests): see NearKm.
	SavedKm float64 `json:"saved_km"`
	// Far counts the requests served from more than NearKm away; Upstream those the upstream
	// served (their distance is not known, so they are not in SavedKm).
	Far      float64 `json:"far"`
	Upstream float64 `json:"upstream"`
	// Mirrors are the configured mirrors already on the continent: when there are some, filling
	// them (sync --demand) or placing them better is the cheaper answer.
	Mirrors []string `json:"mirrors,omitempty"`
}

// NearKm is the distance a mirror on the clients' own continent is taken to serve them from:
// each request of the distance histogram that travelled more than NearKm would, with one,
// travel about NearKm. A bucket's requests are taken at its midpoint (the last finite bound for
// the overflow bucket), so SavedKm = Σ count × max(0, midpoint − NearKm).
const NearKm = 1000.0

// Analyze computes the analysis of d for the configured mirrors ms.
func Analyze(d Data, ms []MirrorInfo, sources []string, windowSeconds float64) Analysis {
	a := Analysis{Sources: sources, WindowSeconds: windowSeconds, Mirrors: []MirrorDemand{}, Continents: []ContinentDemand{}, NewMirror: []Suggestion{}}
	cont := map[string]string{}
	for _, m := range ms {
		cont[m.Name] = m.Continent
	}
	served := map[string]float64{}
	type cs struct{ total, on, up float64 }
	byCont := map[string]*cs{}
	for _, s := range d.Served {
		served[s.Mirror] += s.Requests
		c := byCont[s.Continent]
		if c == nil {
			c = &cs{}
			byCont[s.Continent] = c
		}
		c.total += s.Requests
		switch {
		case s.Mirror == "upstream":
			c.up += s.Requests
		case cont[s.Mirror] != "" && cont[s.Mirror] == s.Continent:
			c.on += s.Requests
		}
	}
	missed := map[string]map[string]float64{}
	for _, m := range d.Misses {
		if missed[m.Mirror] == nil {
			missed[m.Mirror] = map[string]float64{}
		}
		missed[m.Mirror][m.Repository] += m.Count
	}
	for _, m := range ms {
		md := MirrorDemand{Mirror: m.Name, Continent: m.Continent, Sync: m.Sync, Served: served[m.Name]}
		for repo, n := range missed[m.Name] {
			if n > 0 {
				md.Missed += n
				md.Repositories = append(md.Repositories, RepoDemand{Repository: repo, Misses: n})
			}
		}
		slices.SortFunc(md.Repositories, func(a, b RepoDemand) int {
			return cmp.Or(cmp.Compare(b.Misses, a.Misses), cmp.Compare(a.Repository, b.Repository))
		})
		a.Mirrors = append(a.Mirrors, md)
	}
	a.Mirrors = append(a.Mirrors, MirrorDemand{Mirror: "upstream", Served: served["upstream"]})

	hists := map[string]Histogram{}
	for _, h := range d.Distance {
		hists[h.Continent] = h
	}
	for _, c := range Continents {
		s := byCont[c]
		h, hasHist := hists[c]
		if (s == nil || s.total == 0) && (!hasHist || h.Count == 0) {
			continue // Prometheus answers the zeros of every series the proxies create
		}
		if s == nil {
			s = &cs{}
		}
		cd := ContinentDemand{Continent: c, Requests: s.total}
		if s.total > 0 {
			cd.OnContinent, cd.Upstream = s.on/s.total, s.up/s.total
		}
		if med, ok := Quantile(0.5, h); hasHist && ok {
			cd.MedianKm = &med
		}
		a.Continents = append(a.Continents, cd)
		if c == Unknown {
			continue // a mirror cannot be placed near clients nobody can place
		}
		sg := Suggestion{Continent: c, Upstream: s.up}
		sg.SavedKm, sg.Far = saved(h)
		for _, m := range ms {
			if m.Continent == c {
				sg.Mirrors = append(sg.Mirrors, m.Name)
			}
		}
		if sg.SavedKm > 0 {
			a.NewMirror = append(a.NewMirror, sg)
		}
	}
	slices.SortFunc(a.NewMirror, func(x, y Suggestion) int {
		return cmp.Or(cmp.Compare(y.SavedKm, x.SavedKm), cmp.Compare(x.Continent, y.Continent))
	})
	return a
}

// saved is SavedKm and Far for one continent's histogram (see NearKm).
func saved(h Histogram) (km, far float64) {
	lo, prev := 0.0, 0.0
	for i, b := range h.Bounds {
		n := h.Buckets[i] - prev
		if mid := (lo + b) / 2; n > 0 && mid > NearKm {
			km += n * (mid - NearKm)
		}
		if lo >= NearKm {
			far += n
		}
		lo, prev = b, h.Buckets[i]
	}
	if n := h.Count - prev; n > 0 && lo > NearKm {
		km += n * (lo - NearKm)
		far += n
	}
	return km, far
}

// Quantile estimates the q-quantile of a cumulative histogram as Prometheus'
// histogram_quantile does: linearly within the bucket it falls in (from 0 for the first), and
// the last finite bound for the overflow bucket. ok is false for an empty histogram.
func Quantile(q float64, h Histogram) (v float64, ok bool) {
	if h.Count <= 0 || len(h.Bounds) == 0 {
		return 0, false
	}
	rank := q * h.Count
	lo, prev := 0.0, 0.0
	for i, b := range h.Bounds {
		if h.Buckets[i] >= rank {
			n := h.Buckets[i] - prev
			if n <= 0 {
				return b, true
			}
			return lo + (b-lo)*(rank-prev)/n, true
		}
		lo, prev = b, h.Buckets[i]
	}
	return h.Bounds[len(h.Bounds)-1], true
}

// WriteText prints the analysis for people.
func (a Analysis) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	over := ""
	if a.WindowSeconds > 0 {
		over = fmt.Sprintf("; over %s", fmtDuration(a.WindowSeconds))
	}
	ew.printf("demand: %s%s\n\n", strings.Join(a.Sources, ", "), over)
	tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "mirror\tserved\tmissed\tmissed by repository\n")
	for _, m := range a.Mirrors {
		label := m.Mirror
		if m.Sync != "" {
			label += " (" + cmp.Or(m.Continent, "?") + ", sync: " + m.Sync + ")"
		}
		missed := "-"
		if m.Sync != "" {
			missed = count(m.Missed)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", label, count(m.Served), missed, repoText(m.Repositories))
	}
	_ = tw.Flush()
	ew.printf("\n")
	tw = tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "client continent\trequests\ton the continent\tupstream\tmedian distance\n")
	for _, c := range a.Continents {
		med := "-"
		if c.MedianKm != nil {
			med = fmt.Sprintf("%.0f km", *c.MedianKm)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%.1f%%\t%s\n", c.Continent, count(c.Requests), 100*c.OnContinent, 100*c.Upstream, med)
	}
	_ = tw.Flush()
	ew.printf("\nwhere a new mirror would shorten distances most (km saved if each request served from over %.0f km came from %.0f km):\n", NearKm, NearKm)
	if len(a.NewMirror) == 0 {
		ew.printf("  nowhere: every located request was served from within %.0f km\n", NearKm)
	}
	for i, s := range a.NewMirror {
		has := "no mirror there yet"
		if len(s.Mirrors) > 0 {
			has = "mirrors there: " + strings.Join(s.Mirrors, ", ") + " (see what they missed above: a sync: demand mirror fills with sync --demand)"
		}
		ew.printf("  %d. %s: %s km·requests saved, %s requests from afar, %s from the upstream; %s\n", i+1, s.Continent, count(s.SavedKm), count(s.Far), count(s.Upstream), has)
	}
	return ew.err
}

func repoText(rs []RepoDemand) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.Repository + " " + count(r.Misses)
	}
	return strings.Join(parts, ", ")
}

// count prints a count that may be fractional (Prometheus extrapolates increase()).
func count(f float64) string {
	if f == math.Trunc(f) && f < 1e15 {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.1f", f)
}

// fmtDuration prints 24h rather than 24h0m0s.
func fmtDuration(sec float64) string {
	s := secondsDuration(sec).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

func secondsDuration(sec float64) time.Duration { return time.Duration(sec * float64(time.Second)) }
