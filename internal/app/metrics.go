package app

import (
	"net/http"
	"runtime"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/redirector"
	"github.com/happy-turtle/oci-proxy/upstream"
	"github.com/happy-turtle/oci-proxy/upstream/proxy"
)

// kinds are the route kinds, indexed by redirector.Kind; labels come only from small fixed sets
// (route kind, status class, mirror name, reason), never from a repository, digest or address.
var kinds = []redirector.Kind{0, redirector.KindBase, redirector.KindManifest, redirector.KindTags,
	redirector.KindReferrers, redirector.KindBlob, redirector.KindInvalid}

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// Metrics records requests for Prometheus. Every series it can touch on the request path is
// created up front, so observing costs a few atomic adds and no label hashing.
type Metrics struct {
	reg       *prometheus.Registry
	requests  [][len(statusClasses)]prometheus.Counter // [kind][status class]
	durations []prometheus.Observer                    // [kind]
	blobVec   *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	lastOK    prometheus.Gauge
	cache     [][3]prometheus.Counter // [proxy.Kind][proxy.CacheState]
	blobBytes prometheus.Counter

	// Replaced together when a reload changes the mirror table.
	blobs atomic.Pointer[map[[2]string]prometheus.Counter] // {mirror, reason}
	sel   atomic.Pointer[mirrors.Selector]
}

// reasons are every X-Mirror-Reason the selector and the redirector give.
var reasons = []string{
	mirrors.ReasonNetwork, mirrors.ReasonCountry, mirrors.ReasonContinent, mirrors.ReasonDistance,
	mirrors.ReasonWeight, mirrors.ReasonNoGeo, mirrors.ReasonNotPresent, mirrors.ReasonNoMirror,
	mirrors.ReasonUnhealthy, mirrors.ReasonError, mirrors.ReasonBusy, redirector.ReasonNoMirrors,
}

// NewMetrics registers the service's metrics; SetSelector names the mirrors.
func NewMetrics(info BuildInfo) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "oci_proxy_build_info",
		Help:        "Build of the running oci-proxy; always 1.",
		ConstLabels: prometheus.Labels{"version": info.Version, "commit": info.Commit, "goversion": runtime.Version()},
	})
	build.Set(1)
	reqVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oci_proxy_requests_total",
		Help: "Requests answered, by route kind and status class.",
	}, []string{"route", "status"})
	durVec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "oci_proxy_request_duration_seconds",
		Help:    "Time to answer a request, by route kind.",
		Buckets: []float64{.00001, .00005, .0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5},
	}, []string{"route"})
	blobVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oci_proxy_blob_redirects_total",
		Help: "Blob redirects, by mirror (\"upstream\" for the upstream) and X-Mirror-Reason.",
	}, []string{"mirror", "reason"})
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oci_proxy_config_reloads_total",
		Help: "Configuration reloads, by result (ok, refused).",
	}, []string{"result"})
	lastOK := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "oci_proxy_config_last_reload_success_timestamp_seconds",
		Help: "When the running configuration was loaded.",
	})
	lastOK.SetToCurrentTime()
	cacheVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oci_proxy_upstream_cache_total",
		Help: "Proxy-mode answers for manifests, tags and referrers, by kind and cache state (hit, miss, stale).",
	}, []string{"kind", "state"})
	blobBytes := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "oci_proxy_upstream_blob_bytes_total",
		Help: "Blob bytes streamed through the proxy from upstreams that serve them themselves (proxy bandwidth).",
	})
	reg.MustRegister(build, reqVec, durVec, blobVec, reloads, lastOK, cacheVec, blobBytes)

	m := &Metrics{reg: reg, blobVec: blobVec, reloads: reloads, lastOK: lastOK, blobBytes: blobBytes}
	for _, k := range []proxy.Kind{0, proxy.Manifest, proxy.Tags, proxy.Referrers, proxy.Blob} {
		var row [3]prometheus.Counter
		for _, st := range []proxy.CacheState{proxy.Miss, proxy.Hit, proxy.Stale} {
			row[st] = cacheVec.WithLabelValues(k.String(), st.String())
		}
		m.cache = append(m.cache, row)
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("refused")
	for _, k := range kinds {
		var row [len(statusClasses)]prometheus.Counter
		for i, c := range statusClasses {
			row[i] = reqVec.WithLabelValues(k.String(), c)
		}
		m.requests = append(m.requests, row)
		m.durations = append(m.durations, durVec.WithLabelValues(k.String()))
	}
	reg.MustRegister(healthCollector{
		m: m,
		healthy: prometheus.NewDesc("oci_proxy_mirror_healthy",
			"1 while the mirror is a candidate, 0 while it is set aside after failures or for refused credentials.",
			[]string{"mirror"}, nil),
		creds: prometheus.NewDesc("oci_proxy_mirror_credentials_ok",
			"For mirrors the proxy reaches with credentials: 0 while the storage service refuses them (the probe object is refused and no blob is readable), else 1.",
			[]string{"mirror"}, nil),
		skipped: prometheus.NewDesc("oci_proxy_presence_checks_skipped_total",
			"Presence checks not made for blobs the cache does not know, by mirror and reason: budget (presence.max_checks_per_second spent), paced (the mirror answered 429, or 503 with Retry-After).",
			[]string{"mirror", "reason"}, nil),
	})
	m.SetSelector(nil)
	return m
}

// SetSelector makes the metrics follow sel's mirrors (nil: none).
func (m *Metrics) SetSelector(sel *mirrors.Selector) {
	names := []string{upstream.XMirror}
	if sel != nil {
		for _, mr := range sel.Mirrors() {
			names = append(names, mr.Name())
		}
	}
	blobs := map[[2]string]prometheus.Counter{}
	for _, n := range names {
		for _, r := range reasons {
			blobs[[2]string{n, r}] = m.blobVec.WithLabelValues(n, r)
		}
	}
	m.blobs.Store(&blobs)
	m.sel.Store(sel)
}

func (m *Metrics) reloaded(ok bool) {
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
		m.lastOK.SetToCurrentTime()
		return
	}
	m.reloads.WithLabelValues("refused").Inc()
}

// Observe implements redirector.Observer.
func (m *Metrics) Observe(o redirector.Observation) {
	k := int(o.Kind)
	if k >= len(m.requests) {
		k = 0
	}
	if c := o.Status/100 - 1; c >= 0 && c < len(statusClasses) {
		m.requests[k][c].Inc()
	}
	m.durations[k].Observe(o.Elapsed.Seconds())
	if o.Mirror != "" {
		c, ok := (*m.blobs.Load())[[2]string{o.Mirror, o.Reason}]
		if !ok {
			// Not reachable with the reasons above; kept bounded by the same fixed sets anyway.
			c = m.blobVec.WithLabelValues(o.Mirror, "other")
		}
		c.Inc()
	}
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// healthCollector reads the mirrors' health when scraped, so the request path pays nothing.
// The skipped counts start again with each configuration (a reload builds a new selector), which
// Prometheus' rate() takes as a counter reset.
type healthCollector struct {
	m                       *Metrics
	healthy, creds, skipped *prometheus.Desc
}

func (c healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.healthy
	ch <- c.creds
	ch <- c.skipped
}

func (c healthCollector) Collect(ch chan<- prometheus.Metric) {
	sel := c.m.sel.Load()
	if sel == nil {
		return
	}
	bit := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, h := range sel.Health() {
		if !h.Enabled {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.healthy, prometheus.GaugeValue, bit(h.Healthy), h.Name)
		if h.Credentials != "" {
			ch <- prometheus.MustNewConstMetric(c.creds, prometheus.GaugeValue, bit(h.Credentials != mirrors.CredentialsRefused), h.Name)
		}
		ch <- prometheus.MustNewConstMetric(c.skipped, prometheus.CounterValue, float64(h.SkippedBudget), h.Name, "budget")
		ch <- prometheus.MustNewConstMetric(c.skipped, prometheus.CounterValue, float64(h.SkippedPaced), h.Name, "paced")
	}
}

// Cache counts a proxy-mode answer (proxy.Observer).
func (m *Metrics) Cache(k proxy.Kind, s proxy.CacheState) {
	if int(k) < len(m.cache) && int(s) < 3 {
		m.cache[k][s].Inc()
	}
}

// BlobBytes counts bytes streamed through the proxy (proxy.Observer).
func (m *Metrics) BlobBytes(n int64) { m.blobBytes.Add(float64(n)) }
