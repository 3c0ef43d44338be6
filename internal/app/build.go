package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/geo"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/mirrors/gcs"
	"github.com/happy-turtle/oci-proxy/mirrors/s3"
	"github.com/happy-turtle/oci-proxy/redirector"
)

// Parts are the request-path components built from a configuration; serve and resolve share them.
type Parts struct {
	closers  []io.Closer
	Config   *config.Config
	ClientIP *geo.ClientIP
	GeoIP    *geo.GeoIP // nil without a database
	Locator  *geo.Locator
	Selector *mirrors.Selector
}

// BuildParts opens the GeoIP databases and range files and connects every mirror's backend.
// Failures name the file or mirror.
func BuildParts(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Parts, error) {
	header, _ := geo.ParseHeader(cfg.ForwardedHeader) // validated by config
	p := &Parts{Config: cfg, ClientIP: geo.NewClientIP(cfg.TrustedPrefixes, header)}
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
	ms := make([]*mirrors.Mirror, 0, len(cfg.Mirrors))
	for _, mc := range cfg.Mirrors {
		b, err := newBackend(ctx, mc, cfg, httpClient)
		if err != nil {
			p.Close()
			return nil, err
		}
		if c, ok := b.(io.Closer); ok {
			p.closers = append(p.closers, c)
		}
		m, err := mirrors.NewMirror(mc, b, cfg.Signing.TTL)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("%s:%d: %w", cfg.File, mc.Line, err)
		}
		ms = append(ms, m)
	}
	p.Selector = mirrors.NewSelector(ms, mirrors.OptionsFrom(cfg.Presence, log))
	return p, nil
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

// networkRules collects each mirror's own networks (tag "net:<name>") and the cloud providers'
// published ranges.
func networkRules(cfg *config.Config) ([]geo.NetworkRule, error) {
	var rules []geo.NetworkRule
	for _, m := range cfg.Mirrors {
		for _, n := range m.Networks {
			pfx, err := config.ParsePrefix(n)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: mirror %q: %w", cfg.File, m.Line, m.Name, err)
			}
			rules = append(rules, geo.NetworkRule{Prefix: pfx, Tag: "net:" + m.Name})
		}
	}
	for _, r := range cfg.CloudRanges {
		f, err := os.Open(r.File)
		if err != nil {
			return nil, fmt.Errorf("cloud_ranges: %w", err)
		}
		var more []geo.NetworkRule
		switch r.Format {
		case "aws-ip-ranges":
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

func newBackend(ctx context.Context, mc config.Mirror, cfg *config.Config, hc *http.Client) (mirrors.Backend, error) {
	switch mc.Provider {
	case "http":
		u, err := url.Parse(mc.BaseURL)
		if err != nil {
			return nil, fmt.Errorf("mirror %q: base_url: %w", mc.Name, err)
		}
		return mirrors.NewHTTPBackend(u, hc), nil
	case "s3":
		b, err := s3.New(ctx, mc, s3.Options{Timeout: cfg.Presence.Timeout})
		if err != nil {
			return nil, err
		}
		return b, nil
	case "gcs":
		b, err := gcs.New(ctx, mc, gcs.Options{Timeout: cfg.Presence.Timeout})
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, fmt.Errorf("mirror %q: unknown provider %q", mc.Name, mc.Provider)
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
	loc *geo.Locator
	sel *mirrors.Selector
	log *slog.Logger
}

func (b blobRouter) RouteBlob(ctx context.Context, q redirector.BlobQuery) redirector.BlobTarget {
	loc := b.loc.Locate(q.Client)
	d := b.sel.Choose(ctx, mirrors.Query{Loc: loc, Digest: q.Digest, Method: q.Method})
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
	return redirector.BlobTarget{URL: d.Location, Mirror: d.Mirror, Reason: d.Reason, Country: loc.Country}
}
