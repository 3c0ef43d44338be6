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

	"github.com/happy-turtle/oci-proxy/geo/codes"
	"github.com/happy-turtle/oci-proxy/oci"
)

// Defaults for settings the file leaves out, and the bounds of a few values.
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
	DefaultWeight      = 100
	MaxWeight          = 1000000

	// DefaultMaxChecksPerSecond is each mirror's budget of presence checks for blobs the cache
	// does not know: a real pull's cold start needs a few hundred spread over seconds, while a
	// flood of made-up digests would make thousands a second (mirrors.DefaultMaxChecksPerSecond
	// says why this number).
	DefaultMaxChecksPerSecond = 200
	MaxChecksPerSecond        = 1000000

	// The manifest cache of proxy routes: a pushed tag shows within seconds; a registry's short
	// outage is ridden out; thousands of manifests fit.
	DefaultTagTTL     = 5 * time.Second
	DefaultStaleGrace = 5 * time.Minute
	DefaultCacheBytes = 32 << 20
	MaxCacheTTL       = 24 * time.Hour
)

// resolve checks every value of r and builds the Config; problems go to v.
func resolve(r *rawConfig, file string, v *validator) *Config {
	c := &Config{
		File:   file,
		Name:   r.Name,
		Listen: r.Listen,
		GeoIP:  GeoIP(r.GeoIP),
		Admin:  Admin(r.Admin),
		Sync:   Sync{Webhook: Webhook(r.Sync.Webhook)},
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	hasDefault := false
	for _, rt := range r.Routes {
		hasDefault = hasDefault || rt.Prefix == ""
	}
	switch {
	case r.Upstream != "":
		u, err := parseUpstream(r.Upstream)
		if err != nil {
			v.at(p("upstream"), "upstream: %v", err)
		}
		c.Upstream = u
	case !hasDefault:
		v.at(p("upstream"), "upstream is required (or set the UpstreamRegistry environment variable)")
	}
	if c.Name != "" && !publicName.MatchString(c.Name) {
		v.at(p("name"), "name must be a host name as users type it, like images.example.dev, not %q", c.Name)
	}
	if err := checkListen(c.Listen); err != nil {
		v.at(p("listen"), "listen: %v", err)
	}
	for i, s := range r.TrustedProxies {
		pfx, err := parsePrefix(s)
		if err != nil {
			v.at(p("trusted_proxies", i), "trusted_proxies: %v", err)
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, pfx)
	}
	switch strings.ToLower(r.ForwardedHeader) {
	case "", "x-forwarded-for":
		c.ForwardedHeader = XForwardedFor
	case "forwarded":
		c.ForwardedHeader = Forwarded
	case "any":
		c.ForwardedHeader = AnyHeader
	default:
		v.at(p("forwarded_header"), "forwarded_header must be x-forwarded-for, forwarded or any, not %q", r.ForwardedHeader)
	}
	switch strings.ToLower(r.Unlocated) {
	case "", "mirrors":
		c.Unlocated = UnlocatedMirrors
	case "upstream":
		c.Unlocated = UnlocatedUpstream
	default:
		v.at(p("unlocated"), "unlocated must be mirrors or upstream, not %q", r.Unlocated)
	}
	for i, rr := range r.CloudRanges {
		cr := CloudRanges{Cloud: rr.Cloud, File: rr.File}
		format := rr.Format
		if format == "" {
			format = map[string]string{"aws": "aws-ip-ranges", "gcp": "gcp-cloud-json"}[rr.Cloud]
		}
		switch {
		case rr.Cloud != "aws" && rr.Cloud != "gcp":
			v.at(p("cloud_ranges", i, "cloud"), "cloud_ranges: cloud must be aws or gcp, not %q", rr.Cloud)
		case format == "aws-ip-ranges":
			cr.Format = AWSIPRanges
		case format == "gcp-cloud-json":
			cr.Format = GCPCloudJSON
		default:
			v.at(p("cloud_ranges", i, "format"), "cloud_ranges: format must be aws-ip-ranges or gcp-cloud-json, not %q", rr.Format)
		}
		if rr.File == "" {
			v.at(p("cloud_ranges", i), "cloud_ranges: file is required")
		}
		c.CloudRanges = append(c.CloudRanges, cr)
	}
	c.Signing.TTL = r.Signing.TTL
	if c.Signing.TTL == 0 {
		c.Signing.TTL = DefaultSigningTTL
	}
	c.Mirrors = resolveMirrors(r, c.Signing.TTL, v)
	if c.Signing.TTL < time.Second || c.Signing.TTL > MaxSigningTTL {
		v.at(p("signing", "ttl"), "signing.ttl must be between 1s and %s, not %s", MaxSigningTTL, c.Signing.TTL)
	}
	c.Presence = resolvePresence(r.Presence, v)
	if c.Admin.Listen != "" {
		if err := checkListen(c.Admin.Listen); err != nil {
			v.at(p("admin", "listen"), "admin.listen: %v", err)
		}
	}
	c.Routes = resolveRoutes(r.Routes, v)
	c.Cache = resolveCache(r.Cache, v)
	c.Sync.Repositories = resolveSync(r.Sync.Repositories, v)
	return c
}

func resolvePresence(r rawPresence, v *validator) Presence {
	pr := Presence{
		Timeout: r.Timeout, HitTTL: r.HitTTL, MissTTL: r.MissTTL, CacheSize: r.CacheSize,
		HealthAfter: r.HealthAfter, Backoff: r.Backoff, MaxChecksPerSecond: DefaultMaxChecksPerSecond,
	}
	if n := r.MaxChecksPerSecond; n != nil {
		if *n < 0 || *n > MaxChecksPerSecond {
			v.at(p("presence", "max_checks_per_second"), "presence.max_checks_per_second must be between 0 (no limit) and %d, not %d", MaxChecksPerSecond, *n)
		}
		pr.MaxChecksPerSecond = *n
	}
	for _, d := range []struct {
		key string
		val *time.Duration
		def time.Duration
	}{
		{"timeout", &pr.Timeout, DefaultTimeout},
		{"hit_ttl", &pr.HitTTL, DefaultHitTTL},
		{"miss_ttl", &pr.MissTTL, DefaultMissTTL},
		{"backoff", &pr.Backoff, DefaultBackoff},
	} {
		switch {
		case *d.val < 0:
			v.at(p("presence", d.key), "presence.%s must not be negative", d.key)
		case *d.val == 0:
			*d.val = d.def
		}
	}
	for _, n := range []struct {
		key string
		val *int
		def int
	}{
		{"cache_size", &pr.CacheSize, DefaultCacheSize},
		{"health_after", &pr.HealthAfter, DefaultHealthAfter},
	} {
		switch {
		case *n.val < 0:
			v.at(p("presence", n.key), "presence.%s must not be negative", n.key)
		case *n.val == 0:
			*n.val = n.def
		}
	}
	return pr
}

// parseUpstream checks an upstream registry URL: absolute http(s), with the registry's /v2/ path and
// an optional repository prefix, and nothing a redirect must not carry (credentials, query,
// fragment). The result's path ends with "/".
func parseUpstream(s string) (*url.URL, error) {
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

// parsePrefix accepts a CIDR or a single address (a prefix of its full length). IPv4-mapped IPv6
// forms are unmapped: clients are compared by their unmapped address, so ::ffff:10.0.0.0/104 is
// 10.0.0.0/8, and a mapped prefix shorter than /96 (which would cover IPv6 addresses too) is
// refused rather than silently matching nothing.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %v", s, err)
		}
		if pfx.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone", s)
		}
		if pfx.Addr().Is4In6() {
			if pfx.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped prefix shorter than /96; give the IPv4 network instead", s)
			}
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		}
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
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

// UpstreamMirror is the name X-Mirror gives the upstream; no mirror may take it.
const UpstreamMirror = "upstream"

func resolveMirrors(r *rawConfig, defaultTTL time.Duration, v *validator) []Mirror {
	seen := map[string]int{}
	var out []Mirror
	for i := range r.Mirrors {
		rm := &r.Mirrors[i]
		m := Mirror{
			Name:            rm.Name,
			Line:            lineOf(v.root, p("mirrors", i)),
			Enabled:         rm.Enabled == nil || *rm.Enabled,
			Bucket:          rm.Bucket,
			Region:          rm.Region,
			Profile:         rm.Profile,
			CredentialsFile: rm.CredentialsFile,
			Public:          rm.Public,
			Prefix:          rm.Prefix,
			AssumePresent:   rm.AssumePresent,
			CloudRegions:    rm.CloudRegions,
			ASNs:            rm.ASNs,
			Weight:          DefaultWeight,
			SigningTTL:      rm.SigningTTL,
		}
		at := func(key string, format string, args ...any) {
			label := fmt.Sprintf("mirror %q", m.Name)
			if m.Name == "" {
				label = fmt.Sprintf("mirror #%d", i+1)
			}
			path := p("mirrors", i)
			if key != "" {
				path = p("mirrors", i, key)
			}
			v.at(path, "%s: %s", label, fmt.Sprintf(format, args...))
		}
		switch {
		case m.Name == "":
			at("", "name is required")
		case !mirrorName.MatchString(m.Name) || m.Name == UpstreamMirror:
			at("name", "name must be lowercase letters, digits, '.', '_' or '-' (and not %q)", UpstreamMirror)
		default:
			if first, dup := seen[m.Name]; dup {
				at("name", "name is already used by mirror #%d", first+1)
			}
			seen[m.Name] = i
		}
		switch rm.Provider {
		case "s3":
			m.Provider = S3
			if rm.Bucket == "" {
				at("bucket", "bucket is required")
			}
			if rm.Region == "" && rm.Endpoint == "" {
				at("region", "region is required for s3")
			}
			if rm.Endpoint != "" {
				u, err := url.Parse(rm.Endpoint)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
					at("endpoint", "endpoint must be an http(s) URL without credentials, query or fragment, not %q", rm.Endpoint)
				} else {
					m.Endpoint = u
				}
			}
		case "gcs":
			m.Provider = GCS
			if rm.Bucket == "" {
				at("bucket", "bucket is required")
			}
		case "http":
			m.Provider = HTTP
			if rm.BaseURL == "" {
				at("base_url", "base_url is required for http")
			} else if u, err := url.Parse(rm.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
				at("base_url", "base_url must be an http(s) URL without credentials, query or fragment, not %q", rm.BaseURL)
			} else {
				if !strings.HasSuffix(u.Path, "/") {
					u.Path += "/"
					if u.RawPath != "" {
						u.RawPath += "/"
					}
				}
				m.BaseURL = u
			}
		case "":
			at("", "provider is required (s3, gcs or http)")
		default:
			at("provider", "provider must be s3, gcs or http, not %q", rm.Provider)
		}
		if rm.Provider != "s3" {
			if rm.Endpoint != "" {
				at("endpoint", "endpoint is only for s3")
			}
			if rm.Profile != "" {
				at("profile", "profile is only for s3")
			}
		}
		if rm.Provider != "gcs" && rm.Public {
			at("public", "public is only for gcs (an http mirror is always public)")
		}
		if rm.Provider == "http" && (rm.Bucket != "" || rm.CredentialsFile != "") {
			at("bucket", "an http mirror has no bucket or credentials: give base_url")
		}
		if m.Prefix != "" && (strings.HasPrefix(m.Prefix, "/") || !strings.HasSuffix(m.Prefix, "/") || strings.Contains(m.Prefix, "//") || strings.ContainsAny(m.Prefix, "?#%\\") || hasDotSegment(m.Prefix)) {
			at("prefix", "prefix must be a relative path ending in \"/\", like \"blobs/\", not %q", m.Prefix)
		}
		if rm.Country != "" {
			m.Country = strings.ToUpper(rm.Country)
			if !codes.ValidCountry(m.Country) {
				at("country", "country %q is not an ISO 3166-1 alpha-2 code", m.Country)
			}
		}
		if rm.Continent != "" {
			m.Continent = strings.ToUpper(rm.Continent)
			if !codes.ValidContinent(m.Continent) {
				at("continent", "continent %q is not one of AF AN AS EU NA OC SA", m.Continent)
			}
		} else {
			m.Continent = codes.ContinentOf(m.Country)
		}
		if l := rm.Location; l != nil {
			if l.Lat < -90 || l.Lat > 90 || l.Lon < -180 || l.Lon > 180 {
				at("location", "location must have lat in [-90, 90] and lon in [-180, 180]")
			}
			m.Location = &Point{Lat: l.Lat, Lon: l.Lon}
		}
		for j, n := range rm.Networks {
			pfx, err := parsePrefix(n)
			if err != nil {
				v.at(p("mirrors", i, "networks", j), "mirror %q: networks: %v", m.Name, err)
				continue
			}
			m.Networks = append(m.Networks, pfx)
		}
		for j, cr := range rm.CloudRegions {
			if !cloudRegion.MatchString(cr) {
				v.at(p("mirrors", i, "cloud_regions", j), "mirror %q: cloud region %q must look like aws:us-east-1 or gcp:europe-west1", m.Name, cr)
			}
		}
		for j, a := range rm.ASNs {
			if a == 0 {
				v.at(p("mirrors", i, "asns", j), "mirror %q: asns: 0 is not an AS number", m.Name)
			}
		}
		if len(rm.ASNs) > 0 && r.GeoIP.ASNDatabase == "" {
			at("asns", "asns needs geoip.asn_database to know a client's AS number")
		}
		for _, list := range []struct {
			key  string
			vals []string
			ok   func(string) bool
			out  *[]string
		}{
			{"only_countries", rm.OnlyCountries, codes.ValidCountry, &m.OnlyCountries},
			{"exclude_countries", rm.ExcludeCountries, codes.ValidCountry, &m.ExcludeCountries},
			{"only_continents", rm.OnlyContinents, codes.ValidContinent, &m.OnlyContinents},
		} {
			for j, val := range list.vals {
				code := strings.ToUpper(val)
				if !list.ok(code) {
					v.at(p("mirrors", i, list.key, j), "mirror %q: %s: %q is not a valid code", m.Name, list.key, code)
					continue
				}
				*list.out = append(*list.out, code)
			}
		}
		switch strings.ToLower(rm.AddressFamily) {
		case "":
		case "ipv4":
			m.AddressFamily = IPv4Only
		case "ipv6":
			m.AddressFamily = IPv6Only
		default:
			at("address_family", "address_family must be ipv4 or ipv6, not %q", rm.AddressFamily)
		}
		if rm.Weight != nil {
			m.Weight = *rm.Weight
			if m.Weight < 0 || m.Weight > MaxWeight {
				at("weight", "weight must be between 0 and %d", MaxWeight)
			}
		}
		switch strings.ToLower(rm.Sync) {
		case "", "all":
		case "demand":
			m.Sync = SyncDemand
			if rm.Provider == "http" {
				at("sync", "sync: demand needs a mirror that sync can write (s3 or gcs), not an http one")
			}
		default:
			at("sync", "sync must be all or demand, not %q", rm.Sync)
		}
		switch {
		case m.SigningTTL == 0:
			m.SigningTTL = defaultTTL
		case m.SigningTTL < time.Second || m.SigningTTL > MaxSigningTTL:
			at("signing_ttl", "signing_ttl must be between 1s and %s", MaxSigningTTL)
		}
		out = append(out, m)
	}
	return out
}

func hasDotSegment(prefix string) bool {
	for _, seg := range strings.Split(strings.TrimSuffix(prefix, "/"), "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

func resolveCache(r rawCache, v *validator) Cache {
	c := Cache{TagTTL: DefaultTagTTL, StaleGrace: DefaultStaleGrace, MaxBytes: DefaultCacheBytes}
	for _, d := range []struct {
		key string
		in  *time.Duration
		out *time.Duration
	}{{"tag_ttl", r.TagTTL, &c.TagTTL}, {"stale_grace", r.StaleGrace, &c.StaleGrace}} {
		if d.in == nil {
			continue
		}
		if *d.in < 0 || *d.in > MaxCacheTTL {
			v.at(p("cache", d.key), "cache.%s must be between 0 (off) and %s, not %s", d.key, MaxCacheTTL, *d.in)
		}
		*d.out = *d.in
	}
	if r.MaxBytes != nil {
		if *r.MaxBytes < 0 {
			v.at(p("cache", "max_bytes"), "cache.max_bytes must not be negative (0 turns the cache off)")
		}
		c.MaxBytes = *r.MaxBytes
	}
	return c
}

func resolveRoutes(raw []rawRoute, v *validator) []Route {
	seen := map[string]bool{}
	var out []Route
	for i, rr := range raw {
		r := Route{Prefix: rr.Prefix, Line: lineOf(v.root, p("routes", i)), Auth: Auth(rr.Auth)}
		if r.Prefix != "" {
			if !strings.HasSuffix(r.Prefix, "/") || oci.ValidateName(strings.TrimSuffix(r.Prefix, "/")) != nil {
				v.at(p("routes", i, "prefix"), "routes: prefix %q must be a repository name ending in \"/\" (or \"\" for the default)", r.Prefix)
			}
		}
		if seen[r.Prefix] {
			v.at(p("routes", i, "prefix"), "routes: prefix %q appears twice", r.Prefix)
		}
		seen[r.Prefix] = true
		if rr.Upstream == "" {
			v.at(p("routes", i), "routes: upstream is required")
		} else if u, err := parseUpstream(rr.Upstream); err != nil {
			v.at(p("routes", i, "upstream"), "routes: upstream: %v", err)
		} else {
			r.Upstream = u
		}
		switch rr.Mode {
		case "", "redirect":
			r.Mode = Redirect
		case "proxy":
			r.Mode = Proxy
		default:
			v.at(p("routes", i, "mode"), "routes: mode must be redirect or proxy, not %q", rr.Mode)
		}
		a := r.Auth
		kinds := 0
		for _, set := range []bool{a.Username != "" || a.PasswordFile != "", a.DockerConfig != "", a.Client} {
			if set {
				kinds++
			}
		}
		switch {
		case kinds > 1:
			v.at(p("routes", i, "auth"), "routes: auth takes one of username and password_file, docker_config, or client: true")
		case (a.Username == "") != (a.PasswordFile == ""):
			v.at(p("routes", i, "auth"), "routes: auth needs both username and password_file")
		case a.Client && r.Mode != Proxy:
			v.at(p("routes", i, "auth"), "routes: auth.client relays the clients' credentials, which needs mode: proxy")
		}
		out = append(out, r)
	}
	return out
}

func resolveSync(raw []rawSyncRepository, v *validator) []SyncRepository {
	var out []SyncRepository
	for i, r := range raw {
		if err := oci.ValidateName(r.Name); err != nil {
			v.at(p("sync", "repositories", i, "name"), "sync: repository %q: %v", r.Name, err)
		}
		for j, g := range r.Tags {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				v.at(p("sync", "repositories", i, "tags", j), "sync: tag pattern %q is not a valid glob", g)
			}
		}
		out = append(out, SyncRepository(r))
	}
	return out
}
