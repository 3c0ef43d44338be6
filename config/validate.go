package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/happy-turtle/oci-proxy/geo"
	"github.com/happy-turtle/oci-proxy/oci"
)

// Defaults for settings the file leaves out.
const (
	DefaultListen      = ":8080"
	DefaultSigningTTL  = 15 * time.Minute
	MaxSigningTTL      = 7 * 24 * time.Hour // the longest S3 and GCS V4 signatures allow
	DefaultTimeout     = 2 * time.Second
	DefaultHitTTL      = 24 * time.Hour
	DefaultMissTTL     = 30 * time.Second
	DefaultCacheSize   = 100000
	DefaultHealthAfter = 3
	DefaultBackoff     = 10 * time.Second
)

func (c *Config) applyDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Signing.TTL == 0 {
		c.Signing.TTL = DefaultSigningTTL
	}
	pr := &c.Presence
	if pr.Timeout == 0 {
		pr.Timeout = DefaultTimeout
	}
	if pr.HitTTL == 0 {
		pr.HitTTL = DefaultHitTTL
	}
	if pr.MissTTL == 0 {
		pr.MissTTL = DefaultMissTTL
	}
	if pr.CacheSize == 0 {
		pr.CacheSize = DefaultCacheSize
	}
	if pr.HealthAfter == 0 {
		pr.HealthAfter = DefaultHealthAfter
	}
	if pr.Backoff == 0 {
		pr.Backoff = DefaultBackoff
	}
	for i := range c.Routes {
		if c.Routes[i].Mode == "" {
			c.Routes[i].Mode = "redirect"
		}
	}
	for i := range c.CloudRanges {
		r := &c.CloudRanges[i]
		if r.Format == "" {
			switch r.Cloud {
			case "aws":
				r.Format = "aws-ip-ranges"
			case "gcp":
				r.Format = "gcp-cloud-json"
			}
		}
	}
}

func (c *Config) validate(v *validator) {
	if c.Upstream == "" && !c.hasDefaultRoute() {
		v.at(p("upstream"), "upstream is required (or set the UpstreamRegistry environment variable)")
	} else if c.Upstream != "" {
		u, err := ParseUpstream(c.Upstream)
		if err != nil {
			v.at(p("upstream"), "upstream: %v", err)
		}
		c.UpstreamURL = u
	}
	if c.Name != "" && !publicName.MatchString(c.Name) {
		v.at(p("name"), "name must be a host name as users type it, like images.example.dev, not %q", c.Name)
	}
	if err := checkListen(c.Listen); err != nil {
		v.at(p("listen"), "listen: %v", err)
	}
	for i, s := range c.TrustedProxies {
		pfx, err := ParsePrefix(s)
		if err != nil {
			v.at(p("trusted_proxies", i), "trusted_proxies: %v", err)
			continue
		}
		c.TrustedPrefixes = append(c.TrustedPrefixes, pfx)
	}
	if _, ok := geo.ParseHeader(c.ForwardedHeader); !ok {
		v.at(p("forwarded_header"), "forwarded_header must be x-forwarded-for, forwarded or any, not %q", c.ForwardedHeader)
	}
	for i, r := range c.CloudRanges {
		switch {
		case r.Cloud != "aws" && r.Cloud != "gcp":
			v.at(p("cloud_ranges", i, "cloud"), "cloud_ranges: cloud must be aws or gcp, not %q", r.Cloud)
		case r.Format != "aws-ip-ranges" && r.Format != "gcp-cloud-json":
			v.at(p("cloud_ranges", i, "format"), "cloud_ranges: format must be aws-ip-ranges or gcp-cloud-json, not %q", r.Format)
		}
		if r.File == "" {
			v.at(p("cloud_ranges", i), "cloud_ranges: file is required")
		}
	}
	c.validateMirrors(v)
	if c.Signing.TTL < time.Second || c.Signing.TTL > MaxSigningTTL {
		v.at(p("signing", "ttl"), "signing.ttl must be between 1s and %s, not %s", MaxSigningTTL, c.Signing.TTL)
	}
	pr := c.Presence
	for _, d := range []struct {
		key string
		val time.Duration
	}{{"timeout", pr.Timeout}, {"hit_ttl", pr.HitTTL}, {"miss_ttl", pr.MissTTL}, {"backoff", pr.Backoff}} {
		if d.val < 0 {
			v.at(p("presence", d.key), "presence.%s must not be negative", d.key)
		}
	}
	if pr.CacheSize < 0 {
		v.at(p("presence", "cache_size"), "presence.cache_size must not be negative")
	}
	if pr.HealthAfter < 0 {
		v.at(p("presence", "health_after"), "presence.health_after must not be negative")
	}
	if c.Admin.Listen != "" {
		if err := checkListen(c.Admin.Listen); err != nil {
			v.at(p("admin", "listen"), "admin.listen: %v", err)
		}
	}
	c.validateRoutes(v)
	c.validateSync(v)
}

func (c *Config) hasDefaultRoute() bool {
	for _, r := range c.Routes {
		if r.Prefix == "" {
			return true
		}
	}
	return false
}

// ParseUpstream checks an upstream registry URL: absolute http(s), with the registry's /v2/ path and
// an optional repository prefix, and nothing a redirect must not carry (credentials, query,
// fragment). The result's path ends with "/".
func ParseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q must start with https:// (or http://)", s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("credentials do not belong in the upstream URL; use routes[].auth")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return nil, fmt.Errorf("%q must not have a query or fragment", s)
	}
	pth := strings.TrimSuffix(u.Path, "/")
	if pth != "/v2" && !strings.HasPrefix(pth, "/v2/") {
		return nil, fmt.Errorf("%q must include the registry API path /v2/, e.g. https://%s/v2/%s", s, u.Host, strings.Trim(u.Path, "/"))
	}
	if rest := strings.TrimPrefix(pth, "/v2/"); rest != pth && rest != "" {
		if err := oci.ValidateName(rest); err != nil {
			return nil, fmt.Errorf("repository prefix %q: %v", rest, err)
		}
	}
	u.Path = pth + "/"
	u.RawPath = ""
	return u, nil
}

// ParsePrefix accepts a CIDR or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %v", s, err)
		}
		if pfx.Addr().Is4In6() {
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		}
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. \":8080\")", addr)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", addr)
	}
	return nil
}

var (
	// publicName is a DNS name with an optional port: only what appears before the first '/' of an
	// image reference.
	publicName  = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?(:[0-9]{1,5})?$`)
	mirrorName  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	cloudRegion = regexp.MustCompile(`^(aws|gcp|azure):[a-z0-9-]+$`)
)

func (c *Config) validateMirrors(v *validator) {
	seen := map[string]int{}
	for i := range c.Mirrors {
		m := &c.Mirrors[i]
		m.Line = lineOf(v.root, p("mirrors", i))
		at := func(key string, format string, args ...any) {
			label := fmt.Sprintf("mirror %q", m.Name)
			if m.Name == "" {
				label = fmt.Sprintf("mirror #%d", i+1)
			}
			var path []any
			if key == "" {
				path = p("mirrors", i)
			} else {
				path = p("mirrors", i, key)
			}
			v.at(path, "%s: %s", label, fmt.Sprintf(format, args...))
		}
		switch {
		case m.Name == "":
			at("", "name is required")
		case !mirrorName.MatchString(m.Name) || m.Name == "upstream":
			at("name", "name must be lowercase letters, digits, '.', '_' or '-' (and not \"upstream\")")
		default:
			if first, dup := seen[m.Name]; dup {
				at("name", "name is already used by mirror #%d", first+1)
			}
			seen[m.Name] = i
		}
		switch m.Provider {
		case "s3":
			if m.Bucket == "" {
				at("bucket", "bucket is required")
			}
			if m.Region == "" && m.Endpoint == "" {
				at("region", "region is required for s3")
			}
			if m.Endpoint != "" {
				if u, err := url.Parse(m.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					at("endpoint", "endpoint must be an http(s) URL, not %q", m.Endpoint)
				}
			}
		case "gcs":
			if m.Bucket == "" {
				at("bucket", "bucket is required")
			}
		case "http":
			if m.BaseURL == "" {
				at("base_url", "base_url is required for http")
			} else if u, err := url.Parse(m.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
				at("base_url", "base_url must be an http(s) URL without credentials, query or fragment, not %q", m.BaseURL)
			}
		case "":
			at("", "provider is required (s3, gcs or http)")
		default:
			at("provider", "provider must be s3, gcs or http, not %q", m.Provider)
		}
		if m.Provider != "s3" {
			if m.Endpoint != "" {
				at("endpoint", "endpoint is only for s3")
			}
			if m.Profile != "" {
				at("profile", "profile is only for s3")
			}
		}
		if m.Provider != "gcs" && m.Public {
			at("public", "public is only for gcs (an http mirror is always public)")
		}
		if m.Provider == "http" && (m.Bucket != "" || m.CredentialsFile != "") {
			at("bucket", "an http mirror has no bucket or credentials: give base_url")
		}
		if m.Prefix != "" && (strings.HasPrefix(m.Prefix, "/") || !strings.HasSuffix(m.Prefix, "/") || strings.Contains(m.Prefix, "//") || strings.ContainsAny(m.Prefix, "?#%\\")) {
			at("prefix", "prefix must be a relative path ending in \"/\", like \"blobs/\", not %q", m.Prefix)
		}
		if m.Country != "" {
			m.Country = strings.ToUpper(m.Country)
			if !geo.ValidCountry(m.Country) {
				at("country", "country %q is not an ISO 3166-1 alpha-2 code", m.Country)
			}
		}
		if m.Continent != "" {
			m.Continent = strings.ToUpper(m.Continent)
			if !geo.ValidContinent(m.Continent) {
				at("continent", "continent %q is not one of AF AN AS EU NA OC SA", m.Continent)
			}
		} else if m.Country != "" {
			m.Continent = geo.ContinentOf(m.Country)
		}
		if l := m.Location; l != nil && (l.Lat < -90 || l.Lat > 90 || l.Lon < -180 || l.Lon > 180) {
			at("location", "location must have lat in [-90, 90] and lon in [-180, 180]")
		}
		for j, n := range m.Networks {
			if _, err := ParsePrefix(n); err != nil {
				v.at(p("mirrors", i, "networks", j), "mirror %q: networks: %v", m.Name, err)
			}
		}
		for j, r := range m.CloudRegions {
			if !cloudRegion.MatchString(r) {
				v.at(p("mirrors", i, "cloud_regions", j), "mirror %q: cloud region %q must look like aws:us-east-1 or gcp:europe-west1", m.Name, r)
			}
		}
		for j, a := range m.ASNs {
			if a == 0 {
				v.at(p("mirrors", i, "asns", j), "mirror %q: asns: 0 is not an AS number", m.Name)
			}
		}
		if len(m.ASNs) > 0 && c.GeoIP.ASNDatabase == "" {
			at("asns", "asns needs geoip.asn_database to know a client's AS number")
		}
		for _, list := range []struct {
			key  string
			vals []string
			ok   func(string) bool
		}{
			{"only_countries", m.OnlyCountries, geo.ValidCountry},
			{"exclude_countries", m.ExcludeCountries, geo.ValidCountry},
			{"only_continents", m.OnlyContinents, geo.ValidContinent},
		} {
			for j := range list.vals {
				list.vals[j] = strings.ToUpper(list.vals[j])
				if !list.ok(list.vals[j]) {
					v.at(p("mirrors", i, list.key, j), "mirror %q: %s: %q is not a valid code", m.Name, list.key, list.vals[j])
				}
			}
		}
		switch m.AddressFamily {
		case "", "ipv4", "ipv6":
		default:
			at("address_family", "address_family must be ipv4 or ipv6, not %q", m.AddressFamily)
		}
		if m.Weight != nil && (*m.Weight < 0 || *m.Weight > 1000000) {
			at("weight", "weight must be between 0 and 1000000")
		}
		if m.SigningTTL != 0 && (m.SigningTTL < time.Second || m.SigningTTL > MaxSigningTTL) {
			at("signing_ttl", "signing_ttl must be between 1s and %s", MaxSigningTTL)
		}
	}
}

func (c *Config) validateRoutes(v *validator) {
	seen := map[string]bool{}
	for i := range c.Routes {
		r := &c.Routes[i]
		r.Line = lineOf(v.root, p("routes", i))
		if r.Prefix != "" {
			if !strings.HasSuffix(r.Prefix, "/") || oci.ValidateName(strings.TrimSuffix(r.Prefix, "/")) != nil {
				v.at(p("routes", i, "prefix"), "routes: prefix %q must be a repository name ending in \"/\" (or \"\" for the default)", r.Prefix)
			}
		}
		if seen[r.Prefix] {
			v.at(p("routes", i, "prefix"), "routes: prefix %q appears twice", r.Prefix)
		}
		seen[r.Prefix] = true
		if r.Upstream == "" {
			v.at(p("routes", i), "routes: upstream is required")
		} else if u, err := ParseUpstream(r.Upstream); err != nil {
			v.at(p("routes", i, "upstream"), "routes: upstream: %v", err)
		} else {
			r.UpstreamURL = u
		}
		switch r.Mode {
		case "redirect":
		case "proxy":
			v.at(p("routes", i, "mode"), "routes: mode proxy (serving manifests for upstreams that demand tokens) is not available in this version; use redirect")
		default:
			v.at(p("routes", i, "mode"), "routes: mode must be redirect or proxy, not %q", r.Mode)
		}
		if (r.Auth.Username == "") != (r.Auth.PasswordFile == "") {
			v.at(p("routes", i, "auth"), "routes: auth needs both username and password_file")
		}
	}
}

func (c *Config) validateSync(v *validator) {
	for i, r := range c.Sync.Repositories {
		if err := oci.ValidateName(r.Name); err != nil {
			v.at(p("sync", "repositories", i, "name"), "sync: repository %q: %v", r.Name, err)
		}
		for j, g := range r.Tags {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				v.at(p("sync", "repositories", i, "tags", j), "sync: tag pattern %q is not a valid glob", g)
			}
		}
	}
}
