package app

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/demand"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// demandVecs are the demand metrics, registered once; each configuration resolves its children
// (demandRecorder). Labels come from fixed sets only: mirror names, configured repository names
// or demand.Other, and demand.Continents.
type demandVecs struct {
	misses   *prometheus.CounterVec
	requests *prometheus.CounterVec
	distance *prometheus.HistogramVec
	tracker  *demand.Tracker
	reg      *prometheus.Registry
}

func newDemandVecs(reg *prometheus.Registry) *demandVecs {
	v := &demandVecs{
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: demand.MetricMisses,
			Help: "Blob requests whose first-ranked mirror lacked the blob, by that mirror and repository (a sync.repositories name, else \"other\").",
		}, []string{"mirror", "repository"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: demand.MetricRequests,
			Help: "Blob requests by client continent (\"unknown\" when not located) and the mirror that served them (\"upstream\" for the upstream).",
		}, []string{"continent", "mirror"}),
		distance: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    demand.MetricDistance,
			Help:    "Great-circle distance in km from the client to the mirror that served its blob request, by client continent (requests served by the upstream or with a place unknown are not counted).",
			Buckets: demand.DistanceBuckets,
		}, []string{"continent"}),
		tracker: demand.NewTracker(demand.TrackerOptions{}),
		reg:     reg,
	}
	reg.MustRegister(v.misses, v.requests, v.distance)
	return v
}

// demandRecorder counts one configuration's blob decisions. Every series it can touch is
// resolved when the configuration is loaded (continents × mirrors, mirrors × repositories), so
// a request costs two map lookups and a few atomic adds.
type demandRecorder struct {
	tracker  *demand.Tracker
	mirror   map[string]int // mirror name -> index in requests' rows; 0 is the upstream
	repo     map[string]int // configured repository -> index in misses' rows; len(repo) is other
	repos    []string       // repo's keys by index, then demand.Other
	misses   [][]prometheus.Counter
	requests [][]prometheus.Counter // [continent][mirror]
	distance []prometheus.Observer  // [continent]
}

func (v *demandVecs) recorder(cfg *config.Config, ms []*mirrors.Mirror) *demandRecorder {
	if v == nil {
		return nil // a Service built without demand counting (benchmarks compare against it)
	}
	r := &demandRecorder{tracker: v.tracker, mirror: map[string]int{}, repo: map[string]int{}}
	for _, sr := range cfg.Sync.Repositories {
		if _, dup := r.repo[sr.Name]; !dup {
			r.repo[sr.Name] = len(r.repos)
			r.repos = append(r.repos, sr.Name)
		}
	}
	r.repos = append(r.repos, demand.Other)
	names := []string{upstream.XMirror}
	for _, m := range ms {
		r.mirror[m.Name()] = len(names)
		names = append(names, m.Name())
	}
	r.misses = make([][]prometheus.Counter, len(names))
	for i, n := range names[1:] {
		row := make([]prometheus.Counter, len(r.repos))
		for j, repo := range r.repos {
			row[j] = v.misses.WithLabelValues(n, repo)
		}
		r.misses[i+1] = row
	}
	for _, c := range demand.Continents {
		row := make([]prometheus.Counter, len(names))
		for i, n := range names {
			row[i] = v.requests.WithLabelValues(c, n)
		}
		r.requests = append(r.requests, row)
		r.distance = append(r.distance, v.distance.WithLabelValues(c))
	}
	return r
}

// record counts a blob decision for a client on continent ("" when unknown) asking for digest
// in repository name.
func (r *demandRecorder) record(continent, name string, digest oci.Digest, d *mirrors.Decision) {
	c := demand.ContinentIndex(continent)
	r.requests[c][r.mirror[d.Mirror]].Inc() // "" (the upstream) is not in the map: 0
	if d.DistanceKm >= 0 {
		r.distance[c].Observe(d.DistanceKm)
	}
	if d.Missed == "" {
		return
	}
	mi, ok := r.mirror[d.Missed]
	if !ok {
		return
	}
	ri, ok := r.repo[name]
	if !ok {
		ri = len(r.repos) - 1
	}
	r.misses[mi][ri].Inc()
	r.tracker.Miss(demand.Key{Mirror: d.Missed, Repository: r.repos[ri], Digest: digest})
}

// DefaultDemandTop is how many entries GET /_/demand lists unless ?top= asks for fewer.
const DefaultDemandTop = 500

// demandHandler serves GET /_/demand: this replica's most missed blobs (decaying counts), and
// its blob requests by continent and mirror and their distances since it started.
func (v *demandVecs) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		top := DefaultDemandTop
		if s := r.URL.Query().Get("top"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				http.Error(w, "top: not a whole number", http.StatusBadRequest)
				return
			}
			top = min(n, DefaultDemandTop)
		}
		d := v.snapshot(top)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(d)
	})
}

func (v *demandVecs) snapshot(top int) demand.Data {
	d := demand.Data{HalfLifeSeconds: v.tracker.HalfLife().Seconds(), Misses: []demand.Miss{}, Served: []demand.Served{}, Distance: []demand.Histogram{}}
	for _, e := range v.tracker.Top(top) {
		d.Misses = append(d.Misses, demand.Miss{Mirror: e.Mirror, Repository: e.Repository, Digest: e.Digest.String(), Count: e.Count})
	}
	fams, _ := v.reg.Gather() // a partial answer is still worth showing
	for _, f := range fams {
		switch f.GetName() {
		case demand.MetricRequests:
			for _, m := range f.GetMetric() {
				if n := m.GetCounter().GetValue(); n > 0 {
					d.Served = append(d.Served, demand.Served{Continent: label(m, "continent"), Mirror: label(m, "mirror"), Requests: n})
				}
			}
		case demand.MetricDistance:
			for _, m := range f.GetMetric() {
				h := m.GetHistogram()
				if h.GetSampleCount() == 0 {
					continue
				}
				hist := demand.Histogram{Continent: label(m, "continent"), Count: float64(h.GetSampleCount())}
				for _, b := range h.GetBucket() {
					hist.Bounds = append(hist.Bounds, b.GetUpperBound())
					hist.Buckets = append(hist.Buckets, float64(b.GetCumulativeCount()))
				}
				d.Distance = append(d.Distance, hist)
			}
		}
	}
	return d
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// MirrorMisses returns, per mirror, the blob requests it ranked first for but lacked the blob
// since the service started: the shape redirector.IndexInfo.Misses asks for. It reads the
// counters only, at a cost of a few microseconds per configured series.
func (v *demandVecs) MirrorMisses() map[string]uint64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { v.misses.Collect(ch); close(ch) }()
	out := map[string]uint64{}
	for m := range ch {
		var pb dto.Metric
		if m.Write(&pb) != nil {
			continue
		}
		out[label(&pb, "mirror")] += uint64(pb.GetCounter().GetValue())
	}
	return out
}
