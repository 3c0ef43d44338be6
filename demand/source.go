package demand

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Names of the demand metrics, as the proxy exports them and the Prometheus source queries them.
const (
	MetricMisses   = "oci_proxy_demand_misses_total"
	MetricRequests = "oci_proxy_blob_requests_total"
	MetricDistance = "oci_proxy_blob_distance_km"
)

// SnapshotPath is where a proxy's admin listener serves its Data.
const SnapshotPath = "/_/demand"

// Source is somewhere demand is read from.
type Source interface {
	// Fetch returns the demand of the last window (a Prometheus server), or what the source has
	// (a proxy's /_/demand: counts that decay, whatever the window).
	Fetch(ctx context.Context, window time.Duration) (Data, error)
	// String names the source for reports, without credentials.
	String() string
}

// ParseSource reads a --demand or --from value: "prometheus=URL" for a Prometheus server (the
// base URL its query API is under: http://prometheus:9090), or the URL of a proxy's /_/demand
// (a URL with no path gets SnapshotPath).
func ParseSource(s string, c *http.Client) (Source, error) {
	raw, prom := strings.CutPrefix(s, "prometheus=")
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("demand source %q: want prometheus=URL or the http(s) URL of a proxy's %s", s, SnapshotPath)
	}
	if c == nil {
		c = http.DefaultClient
	}
	if prom {
		u.Path = strings.TrimSuffix(u.Path, "/")
		return &Prometheus{base: u, client: c}, nil
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = SnapshotPath
	}
	return &Proxy{url: u, client: c}, nil
}

// redacted is u without its user information, for messages.
func redacted(u *url.URL) string {
	r := *u
	r.User = nil
	return r.String()
}

// Proxy reads one replica's GET /_/demand.
type Proxy struct {
	url    *url.URL
	client *http.Client
}

func (p *Proxy) String() string { return redacted(p.url) }

// Fetch implements Source. The window is not used: the replica's counts decay with the
// half-life it reports.
func (p *Proxy) Fetch(ctx context.Context, _ time.Duration) (Data, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url.String(), nil)
	if err != nil {
		return Data{}, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return Data{}, fmt.Errorf("%s: %w", p, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Data{}, fmt.Errorf("%s: status %d", p, resp.StatusCode)
	}
	d, err := ParseSnapshot(resp.Body)
	if err != nil {
		return Data{}, fmt.Errorf("%s: %w", p, err)
	}
	return d, nil
}

// Prometheus reads the demand metrics of every replica it scrapes, over a window, through its
// HTTP query API (instant queries of increase()).
type Prometheus struct {
	base   *url.URL
	client *http.Client
}

func (p *Prometheus) String() string { return "prometheus=" + redacted(p.base) }

// promDuration renders a window as PromQL: whole seconds, at least one.
func promDuration(w time.Duration) string {
	return strconv.FormatInt(max(1, int64(w/time.Second)), 10) + "s"
}

// Queries returns the three PromQL queries Fetch sends for window: misses by mirror and
// repository, requests by continent and mirror, and the distance histogram by continent.
func Queries(window time.Duration) (misses, served, distance string) {
	w := promDuration(window)
	return "sum by (mirror, repository) (increase(" + MetricMisses + "[" + w + "]))",
		"sum by (continent, mirror) (increase(" + MetricRequests + "[" + w + "]))",
		"sum by (continent, le) (increase(" + MetricDistance + "_bucket[" + w + "]))"
}

// Fetch implements Source.
func (p *Prometheus) Fetch(ctx context.Context, window time.Duration) (Data, error) {
	qm, qs, qd := Queries(window)
	var d Data
	misses, err := p.query(ctx, qm)
	if err != nil {
		return Data{}, err
	}
	for _, s := range misses {
		if s.Labels["mirror"] == "" || s.Labels["repository"] == "" {
			continue
		}
		d.Misses = append(d.Misses, Miss{Mirror: s.Labels["mirror"], Repository: s.Labels["repository"], Count: s.Value})
	}
	served, err := p.query(ctx, qs)
	if err != nil {
		return Data{}, err
	}
	for _, s := range served {
		if s.Labels["mirror"] == "" || s.Labels["continent"] == "" {
			continue
		}
		d.Served = append(d.Served, Served{Continent: s.Labels["continent"], Mirror: s.Labels["mirror"], Requests: s.Value})
	}
	dist, err := p.query(ctx, qd)
	if err != nil {
		return Data{}, err
	}
	d.Distance, err = histograms(dist)
	if err != nil {
		return Data{}, fmt.Errorf("%s: %w", p, err)
	}
	if err := d.check(); err != nil {
		return Data{}, fmt.Errorf("%s: %w", p, err)
	}
	d.sort()
	return d, nil
}

func (p *Prometheus) query(ctx context.Context, q string) ([]Sample, error) {
	u := *p.base
	u.Path += "/api/v1/query"
	u.RawQuery = url.Values{"query": {q}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	defer resp.Body.Close()
	ss, err := ParseVector(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: query %s: status %d: %w", p, q, resp.StatusCode, err)
	}
	return ss, nil
}

// histograms turns the samples of a "sum by (continent, le)" query into cumulative histograms.
func histograms(ss []Sample) ([]Histogram, error) {
	byCont := map[string]*Histogram{}
	var order []string
	for _, s := range ss {
		c, le := s.Labels["continent"], s.Labels["le"]
		if c == "" || le == "" {
			continue
		}
		h := byCont[c]
		if h == nil {
			h = &Histogram{Continent: c}
			byCont[c] = h
			order = append(order, c)
		}
		if le == "+Inf" {
			h.Count = s.Value
			continue
		}
		b, err := strconv.ParseFloat(le, 64)
		if err != nil {
			return nil, fmt.Errorf("bucket bound %q: not a number", trim(le))
		}
		h.Bounds = append(h.Bounds, b)
		h.Buckets = append(h.Buckets, s.Value)
	}
	out := make([]Histogram, 0, len(order))
	for _, c := range order {
		h := byCont[c]
		sortBuckets(h)
		// increase() of each bucket is extrapolated on its own, so sums can come back a hair
		// out of order; a histogram is cumulative by definition.
		for i := 1; i < len(h.Buckets); i++ {
			h.Buckets[i] = max(h.Buckets[i], h.Buckets[i-1])
		}
		if n := len(h.Buckets); n > 0 {
			h.Count = max(h.Count, h.Buckets[n-1])
		}
		out = append(out, *h)
	}
	return out, nil
}

// sortBuckets orders a histogram's buckets by bound: Prometheus returns samples in no order.
func sortBuckets(h *Histogram) {
	type bucket struct{ bound, count float64 }
	bs := make([]bucket, len(h.Bounds))
	for i := range bs {
		bs[i] = bucket{h.Bounds[i], h.Buckets[i]}
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.bound, b.bound) })
	for i, b := range bs {
		h.Bounds[i], h.Buckets[i] = b.bound, b.count
	}
}

// errNotVector is a Prometheus answer that is not an instant vector.
var errNotVector = errors.New("not an instant vector")
