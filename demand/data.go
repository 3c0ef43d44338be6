package demand

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Continents are the values of the continent label, in a fixed order: the seven two-letter
// codes GeoIP gives, then Unknown for clients that could not be located.
var Continents = []string{"AF", "AN", "AS", "EU", "NA", "OC", "SA", Unknown}

// Unknown is the continent of a client that could not be located.
const Unknown = "unknown"

// ContinentIndex returns c's index in Continents; Unknown's for anything else.
func ContinentIndex(c string) int {
	if len(c) == 2 {
		switch c {
		case "AF":
			return 0
		case "AN":
			return 1
		case "AS":
			return 2
		case "EU":
			return 3
		case "NA":
			return 4
		case "OC":
			return 5
		case "SA":
			return 6
		}
	}
	return len(Continents) - 1
}

// DistanceBuckets are the upper bounds (km) of the distance histogram: one metro area, a
// country, a continent, and across oceans (half the Earth's circumference is 20,000 km).
var DistanceBuckets = []float64{50, 100, 250, 500, 1000, 2000, 4000, 8000, 12000, 20000}

// Data is demand as read from a source: one replica's /_/demand, several summed, or a
// Prometheus server over a window. It is also the JSON body of GET /_/demand.
type Data struct {
	// HalfLifeSeconds is the decay of Misses' counts (a /_/demand answer); 0 when they are
	// plain counts over a window (Prometheus).
	HalfLifeSeconds float64 `json:"half_life_seconds,omitempty"`
	// Misses are blob requests whose first-ranked mirror lacked the blob. Digest is "" when the
	// source counts by repository only (Prometheus).
	Misses []Miss `json:"misses"`
	// Served are blob requests by client continent and the mirror that served them
	// ("upstream" for the upstream).
	Served []Served `json:"served"`
	// Distance is, per client continent, the histogram of the distance to the mirror that
	// served (requests served by the upstream, or with a place unknown, are not in it).
	Distance []Histogram `json:"distance"`
}

// Miss counts misses of one mirror and repository, and digest when known.
type Miss struct {
	Mirror     string  `json:"mirror"`
	Repository string  `json:"repository"`
	Digest     string  `json:"digest,omitempty"`
	Count      float64 `json:"count"`
}

// Served counts the blob requests of clients on a continent served by a mirror.
type Served struct {
	Continent string  `json:"continent"`
	Mirror    string  `json:"mirror"`
	Requests  float64 `json:"requests"`
}

// Histogram is a cumulative histogram of distances (km) for one client continent, as
// Prometheus keeps it: Buckets[i] counts the requests at most Bounds[i] away.
type Histogram struct {
	Continent string    `json:"continent"`
	Bounds    []float64 `json:"bounds"`
	Buckets   []float64 `json:"buckets"`
	Count     float64   `json:"count"` // all requests, the +Inf bucket
}

// Limits on what a source may send: generous for any real deployment, small enough that a
// hostile or broken answer cannot make the reader use much memory or time.
const (
	maxBody    = 16 << 20
	maxEntries = 100000
	maxName    = 256
	maxBounds  = 64
)

// ParseSnapshot reads a GET /_/demand answer. The answer is untrusted: anything malformed,
// too large, or with a value that could not have come from a proxy is an error, never a panic.
func ParseSnapshot(r io.Reader) (Data, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return Data{}, fmt.Errorf("read: %w", err)
	}
	if len(body) > maxBody {
		return Data{}, fmt.Errorf("answer larger than %d bytes", maxBody)
	}
	var d Data
	if err := json.Unmarshal(body, &d); err != nil {
		return Data{}, fmt.Errorf("not a /_/demand answer: %w", err)
	}
	if err := d.check(); err != nil {
		return Data{}, err
	}
	return d, nil
}

// check refuses values no proxy sends.
func (d *Data) check() error {
	if n := len(d.Misses) + len(d.Served) + len(d.Distance); n > maxEntries {
		return fmt.Errorf("%d entries: more than %d", n, maxEntries)
	}
	if !finite(d.HalfLifeSeconds) {
		return errors.New("half_life_seconds: not a count")
	}
	for _, m := range d.Misses {
		if err := checkName("mirror", m.Mirror); err != nil {
			return err
		}
		if err := checkName("repository", m.Repository); err != nil {
			return err
		}
		if len(m.Digest) > maxName || !printable(m.Digest) {
			return fmt.Errorf("digest %q: not a digest", trim(m.Digest))
		}
		if !finite(m.Count) {
			return fmt.Errorf("miss count %v: not a count", m.Count)
		}
	}
	for _, s := range d.Served {
		if err := checkContinent(s.Continent); err != nil {
			return err
		}
		if err := checkName("mirror", s.Mirror); err != nil {
			return err
		}
		if !finite(s.Requests) {
			return fmt.Errorf("request count %v: not a count", s.Requests)
		}
	}
	for _, h := range d.Distance {
		if err := checkContinent(h.Continent); err != nil {
			return err
		}
		if len(h.Bounds) != len(h.Buckets) || len(h.Bounds) > maxBounds {
			return fmt.Errorf("distance histogram for %s: %d bounds, %d buckets", h.Continent, len(h.Bounds), len(h.Buckets))
		}
		for i := range h.Bounds {
			if !finite(h.Bounds[i]) || !finite(h.Buckets[i]) || (i > 0 && (h.Bounds[i] <= h.Bounds[i-1] || h.Buckets[i] < h.Buckets[i-1])) {
				return fmt.Errorf("distance histogram for %s: not cumulative", h.Continent)
			}
		}
		if !finite(h.Count) || (len(h.Buckets) > 0 && h.Count < h.Buckets[len(h.Buckets)-1]) {
			return fmt.Errorf("distance histogram for %s: count %v", h.Continent, h.Count)
		}
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) && f >= 0 }

func checkName(what, s string) error {
	if s == "" || len(s) > maxName || !printable(s) {
		return fmt.Errorf("%s %q: not a name", what, trim(s))
	}
	return nil
}

func checkContinent(c string) error {
	if !slices.Contains(Continents, c) {
		return fmt.Errorf("continent %q: not one of %s", trim(c), strings.Join(Continents, ", "))
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// trim keeps messages about bad input short.
func trim(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Merge adds the demand of several sources (the replicas behind a load balancer): counts of the
// same mirror, repository and digest, continent and mirror, continent and bound are summed.
func Merge(ds ...Data) Data {
	var out Data
	misses := map[Miss]float64{}
	served := map[Served]float64{}
	hists := map[string]*Histogram{}
	for _, d := range ds {
		out.HalfLifeSeconds = max(out.HalfLifeSeconds, d.HalfLifeSeconds)
		for _, m := range d.Misses {
			c := m.Count
			m.Count = 0
			misses[m] += c
		}
		for _, s := range d.Served {
			r := s.Requests
			s.Requests = 0
			served[s] += r
		}
		for _, h := range d.Distance {
			acc := hists[h.Continent]
			if acc == nil {
				acc = &Histogram{Continent: h.Continent, Bounds: slices.Clone(h.Bounds), Buckets: make([]float64, len(h.Bounds))}
				hists[h.Continent] = acc
			}
			acc.Count += h.Count
			for i, b := range h.Bounds {
				if j := slices.Index(acc.Bounds, b); j >= 0 {
					acc.Buckets[j] += h.Buckets[i]
				}
			}
		}
	}
	for m, c := range misses {
		m.Count = c
		out.Misses = append(out.Misses, m)
	}
	for s, r := range served {
		s.Requests = r
		out.Served = append(out.Served, s)
	}
	for _, h := range hists {
		out.Distance = append(out.Distance, *h)
	}
	out.sort()
	return out
}

// sort puts Data in a stable order: misses most first, the rest by name.
func (d *Data) sort() {
	slices.SortFunc(d.Misses, func(a, b Miss) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Mirror, b.Mirror), cmp.Compare(a.Repository, b.Repository), cmp.Compare(a.Digest, b.Digest))
	})
	slices.SortFunc(d.Served, func(a, b Served) int {
		return cmp.Or(cmp.Compare(a.Continent, b.Continent), cmp.Compare(a.Mirror, b.Mirror))
	})
	slices.SortFunc(d.Distance, func(a, b Histogram) int { return cmp.Compare(a.Continent, b.Continent) })
}

// MissesByRepository sums the misses of each (mirror, repository) over digests.
func (d Data) MissesByRepository() map[[2]string]float64 {
	out := map[[2]string]float64{}
	for _, m := range d.Misses {
		out[[2]string{m.Mirror, m.Repository}] += m.Count
	}
	return out
}
