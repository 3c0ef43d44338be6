package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/geo"
	"github.com/happy-turtle/oci-proxy/geo/clientip"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/mirrors/gcs"
	"github.com/happy-turtle/oci-proxy/mirrors/s3"
	"github.com/happy-turtle/oci-proxy/redirector"
)

// Parts are the request-path components built from a configuration; serve and resolve share them.
type Parts struct {
	closers  []io.Closer
	Config   *config.Config
	ClientIP *clientip.Resolver
	GeoIP    *geo.GeoIP // nil without a database
	Locator  *geo.Locator
	Selector *mirrors.Selector
}

// BuildParts opens the GeoIP databases and range files and connects every mirror's backend.
// The configuration is already checked, so what can fail here is I/O: a file, a database, a
// backend's credentials; failures name the file or mirror.
func BuildParts(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Parts, error) {
	p := &Parts{Config: cfg, ClientIP: clientip.New(cfg.TrustedProxies, forwardedHeader(cfg.ForwardedHeader))}
	if cfg.GeoIP.Database != "" || cfg.GeoIP.ASNDatabase != "" {
		g, err := geo.OpenGeoIP(cfg.GeoIP.Database, cfg.GeoIP.ASNDatabase)
		if err != nil {
			return nil, fmt.Errorf("geoip: %w", err)
		}
		p.GeoIP = g
	}
	rules, err := networkRules(cfg)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.Locator = geo.NewLocator(p.GeoIP, geo.NewNetworkTable(rules))

	httpClient := newHTTPClient(cfg.Presence.Timeout)
	// Closed with the parts, so that a replaced configuration lets go of its connections at once.
	p.closers = append(p.closers, idleConns{httpClient})
	ms := make([]*mirrors.Mirror, 0, len(cfg.Mirrors))
	for _, mc := range cfg.Mirrors {
		b, err := newBackend(ctx, mc, cfg.Presence.Timeout, httpClient)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("%s:%d: %w", cfg.File, mc.Line, err)
		}
		if c, ok := b.(io.Closer); ok {
			p.closers = append(p.closers, c)
		}
		ms = append(ms, mirrors.NewMirror(mirrorSpec(mc), b))
	}
	p.Selector = mirrors.NewSelector(ms, selectorOptions(cfg, log))
	return p, nil
}

// Ready reports whether the parts can serve: the GeoIP databases the configuration names are
// open. It backs /readyz.
func (p *Parts) Ready() error {
	if p.GeoIP != nil {
		return p.GeoIP.Ready()
	}
	return nil
}

// Close releases the GeoIP databases and the backends' clients.
func (p *Parts) Close() error {
	var errs []error
	for _, c := range p.closers {
		errs = append(errs, c.Close())
	}
	if p.GeoIP != nil {
		errs = append(errs, p.GeoIP.Close())
	}
	return errors.Join(errs...)
}

func forwardedHeader(h config.Header) clientip.Header {
	switch h {
	case config.Forwarded:
		return clientip.Forwarded
	case config.AnyHeader:
		return clientip.Any
	}
	return clientip.XForwardedFor
}

func mirrorSpec(m config.Mirror) mirrors.Spec {
	s := mirrors.Spec{
		Name:             m.Name,
		Provider:         m.Provider.String(),
		Prefix:           m.Prefix,
		Disabled:         !m.Enabled,
		AssumePresent:    m.AssumePresent,
		Weight:           m.Weight,
		SigningTTL:       m.SigningTTL,
		Country:          m.Country,
		Continent:        m.Continent,
		Networks:         m.Networks,
		CloudRegions:     m.CloudRegions,
		ASNs:             m.ASNs,
		OnlyCountries:    m.OnlyCountries,
		OnlyContinents:   m.OnlyContinents,
		ExcludeCountries: m.ExcludeCountries,
	}
	if m.Location != nil {
		pt := geo.PointAt(m.Location.Lat, m.Location.Lon)
		s.Location = &pt
	}
	// Credentials the service can stop accepting: every s3 mirror, and a gcs one unless it is
	// public and read anonymously. An http mirror has none, and its 403s are absences.
	s.CheckCredentials = m.Provider == config.S3 || (m.Provider == config.GCS && (!m.Public || m.CredentialsFile != ""))
	switch m.AddressFamily {
	case config.IPv4Only:
		s.Family = mirrors.IPv4Only
	case config.IPv6Only:
		s.Family = mirrors.IPv6Only
	}
	return s
}

func selectorOptions(cfg *config.Config, log *slog.Logger) mirrors.Options {
	p := cfg.Presence
	o := mirrors.Options{
		Timeout:            p.Timeout,
		HitTTL:             p.HitTTL,
		MissTTL:            p.MissTTL,
		CacheSize:          p.CacheSize,
		HealthAfter:        p.HealthAfter,
		Backoff:            p.Backoff,
		MaxChecksPerSecond: p.MaxChecksPerSecond,
		Logger:             log,
	}
	if p.MaxChecksPerSecond == 0 {
		o.MaxChecksPerSecond = -1 // the file's 0 is no budget; the option's 0 is the default
	}
	if cfg.Unlocated == config.UnlocatedUpstream {
		o.Unlocated = mirrors.UnlocatedUpstream
	}
	return o
}

// networkRules collects each mirror's own networks (tagged geo.NetTag) and the cloud providers'
// published ranges.
func networkRules(cfg *config.Config) ([]geo.NetworkRule, error) {
	var rules []geo.NetworkRule
	for _, m := range cfg.Mirrors {
		for _, pfx := range m.Networks {
			rules = append(rules, geo.NetworkRule{Prefix: pfx, Tag: geo.NetTag(m.Name)})
		}
	}
	for _, r := range cfg.CloudRanges {
		f, err := os.Open(r.File)
		if err != nil {
			return nil, fmt.Errorf("cloud_ranges: %w", err)
		}
		var more []geo.NetworkRule
		switch r.Format {
		case config.AWSIPRanges:
			more, err = geo.ParseAWSRanges(f)
		default:
			more, err = geo.ParseGCPRanges(f)
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("cloud_ranges %s: %w", r.File, err)
		}
		rules = append(rules, more...)
	}
	return rules, nil
}

func newBackend(ctx context.Context, mc config.Mirror, timeout time.Duration, hc *http.Client) (mirrors.Backend, error) {
	switch mc.Provider {
	case config.HTTP:
		return mirrors.NewHTTPBackend(mc.BaseURL, hc), nil
	case config.S3:
		c := s3.Config{Name: mc.Name, Bucket: mc.Bucket, Region: mc.Region, Profile: mc.Profile, CredentialsFile: mc.CredentialsFile}
		if mc.Endpoint != nil {
			c.Endpoint = mc.Endpoint.String()
		}
		return s3.New(ctx, c, s3.Options{Timeout: timeout})
	case config.GCS:
		return gcs.New(ctx, gcs.Config{Name: mc.Name, Bucket: mc.Bucket, CredentialsFile: mc.CredentialsFile, Public: mc.Public}, gcs.Options{Timeout: timeout})
	}
	// config refuses any other provider; reaching this is a bug in the translation.
	return nil, fmt.Errorf("mirror %q: provider %v has no backend", mc.Name, mc.Provider)
}

// newHTTPClient is the one client of the http mirrors: presence checks are HEADs that must answer
// quickly, and redirects are not followed (a mirror that redirects is misconfigured, and following
// would check somebody else's host).
func newHTTPClient(timeout time.Duration) *http.Client {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{
		Transport: t,
		Timeout:   2 * timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// blobRouter answers the redirector's blob questions: locate the client, then choose a mirror.
type blobRouter struct {
	loc    *geo.Locator
	sel    *mirrors.Selector
	log    *slog.Logger
	demand *demandRecorder // nil: demand not counted
}

func (b blobRouter) RouteBlob(ctx context.Context, q redirector.BlobQuery) redirector.BlobTarget {
	loc := b.loc.Locate(q.Client)
	d := b.sel.Choose(ctx, mirrors.Query{Loc: loc, Digest: q.Digest, Method: q.Method})
	if b.demand != nil {
		b.demand.record(loc.Continent, q.Name, q.Digest, &d)
	}
	if b.log.Enabled(ctx, slog.LevelDebug) {
		// Signed URLs are credentials for their lifetime: only their redacted form is logged.
		target := "upstream"
		if d.URL != nil {
			target = mirrors.Redact(d.URL)
		}
		b.log.LogAttrs(ctx, slog.LevelDebug, "blob routed",
			slog.String("mirror", d.Mirror), slog.String("reason", d.Reason),
			slog.String("country", loc.Country), slog.String("location", target))
	}
	if d.Mirror == "" || d.URL == nil {
		return redirector.BlobTarget{Reason: d.Reason, Country: loc.Country}
	}
	return redirector.BlobTarget{URL: d.Location, Mirror: d.Mirror, Reason: d.Reason, Country: loc.Country, Values: d.Values}
}

// idleConns closes a client's idle connections when the parts close; the client stays usable for
// requests still in flight on the retired generation.
type idleConns struct {
	c interface{ CloseIdleConnections() }
}

func (i idleConns) Close() error { i.c.CloseIdleConnections(); return nil }
