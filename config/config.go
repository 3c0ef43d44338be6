// Package config defines config.yaml: its schema, strict loading with file:line errors, defaults and
// validation. A Config is an immutable value once Load returns it; a reload builds a new one.
// It does not open databases, buckets or sockets: the wiring in cmd does, from a valid Config.
package config

import (
	"net/netip"
	"net/url"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	// Name is the registry's public host name as users type it (images.example.dev), shown on the
	// index page; never used to build a redirect.
	Name           string   `yaml:"name"`
	Listen         string   `yaml:"listen"`
	Upstream       string   `yaml:"upstream"`
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ForwardedHeader is the header the trusted proxies write: x-forwarded-for (default),
	// forwarded (RFC 7239) or any.
	ForwardedHeader string   `yaml:"forwarded_header"`
	GeoIP           GeoIP    `yaml:"geoip"`
	CloudRanges     []Ranges `yaml:"cloud_ranges"`
	Mirrors         []Mirror `yaml:"mirrors"`
	Signing         Signing  `yaml:"signing"`
	Presence        Presence `yaml:"presence"`
	Admin           Admin    `yaml:"admin"`
	Routes          []Route  `yaml:"routes"`
	Sync            Sync     `yaml:"sync"`

	// Set by Load from the fields above; not part of the file.
	File            string         `yaml:"-"`
	UpstreamURL     *url.URL       `yaml:"-"`
	TrustedPrefixes []netip.Prefix `yaml:"-"`
}

// GeoIP names the MaxMind databases. Both are optional.
type GeoIP struct {
	Database    string `yaml:"database"`     // City or Country database (.mmdb)
	ASNDatabase string `yaml:"asn_database"` // ASN database (.mmdb)
}

// Ranges is a cloud provider's published address ranges, mapped to "<cloud>:<region>" tags.
type Ranges struct {
	Cloud  string `yaml:"cloud"`  // aws | gcp
	Format string `yaml:"format"` // aws-ip-ranges | gcp-cloud-json; defaults from Cloud
	File   string `yaml:"file"`
}

// Location is a point on Earth in degrees.
type Location struct {
	Lat float64 `yaml:"lat"`
	Lon float64 `yaml:"lon"`
}

// Mirror is one row of the mirror table.
type Mirror struct {
	Name     string `yaml:"name"`
	Provider string `yaml:"provider"` // s3 | gcs | http
	Enabled  *bool  `yaml:"enabled"`  // default true

	// Storage.
	Bucket          string `yaml:"bucket"`
	Region          string `yaml:"region"`
	Endpoint        string `yaml:"endpoint"` // S3-compatible endpoint, path-style
	Profile         string `yaml:"profile"`  // AWS shared-config profile
	CredentialsFile string `yaml:"credentials_file"`
	BaseURL         string `yaml:"base_url"` // http provider
	Public          bool   `yaml:"public"`   // gcs: unsigned public URLs
	Prefix          string `yaml:"prefix"`
	// AssumePresent skips presence checks: the mirror is known to hold every blob (kept complete
	// by sync, or a CDN that fills itself from the upstream). A blob it lacks then fails the
	// client's download, so use it only when that cannot happen.
	AssumePresent bool `yaml:"assume_present"`

	// Placement and scope.
	Country          string    `yaml:"country"`
	Continent        string    `yaml:"continent"` // derived from Country when empty
	Location         *Location `yaml:"location"`
	Networks         []string  `yaml:"networks"`
	CloudRegions     []string  `yaml:"cloud_regions"`
	ASNs             []uint32  `yaml:"asns"` // clients in these AS numbers prefer this mirror (needs geoip.asn_database)
	OnlyCountries    []string  `yaml:"only_countries"`
	OnlyContinents   []string  `yaml:"only_continents"`
	ExcludeCountries []string  `yaml:"exclude_countries"`
	AddressFamily    string    `yaml:"address_family"` // "", ipv4, ipv6
	Weight           *int      `yaml:"weight"`         // default 100

	SigningTTL time.Duration `yaml:"signing_ttl"` // overrides signing.ttl

	// Set by Load.
	Line int `yaml:"-"`
}

// IsEnabled reports the effective `enabled`.
func (m Mirror) IsEnabled() bool { return m.Enabled == nil || *m.Enabled }

// EffectiveWeight reports the effective `weight`.
func (m Mirror) EffectiveWeight() int {
	if m.Weight == nil {
		return DefaultWeight
	}
	return *m.Weight
}

// DefaultWeight is a mirror's weight when the file gives none.
const DefaultWeight = 100

// Signing sets the lifetime of signed URLs.
type Signing struct {
	TTL time.Duration `yaml:"ttl"` // default 15m
}

// Presence tunes the presence checks and their cache.
type Presence struct {
	Timeout     time.Duration `yaml:"timeout"`      // per check; default 2s
	HitTTL      time.Duration `yaml:"hit_ttl"`      // default 24h (blobs are immutable)
	MissTTL     time.Duration `yaml:"miss_ttl"`     // default 30s
	CacheSize   int           `yaml:"cache_size"`   // entries; default 100000
	HealthAfter int           `yaml:"health_after"` // consecutive failures before back-off; default 3
	Backoff     time.Duration `yaml:"backoff"`      // default 10s
}

// Admin enables the explanation endpoints.
type Admin struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
}

// Route sends names under Prefix to another upstream.
type Route struct {
	Prefix   string `yaml:"prefix"`
	Upstream string `yaml:"upstream"`
	Mode     string `yaml:"mode"` // redirect | proxy
	Auth     Auth   `yaml:"auth"`

	UpstreamURL *url.URL `yaml:"-"`
	Line        int      `yaml:"-"`
}

// Auth are credentials for an upstream, read from files.
type Auth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// Sync configures `oci-proxy sync`.
type Sync struct {
	Repositories []SyncRepository `yaml:"repositories"`
	Webhook      Webhook          `yaml:"webhook"`
}

// SyncRepository is a repository to copy, with tag globs (all tags when empty).
type SyncRepository struct {
	Name string   `yaml:"name"`
	Tags []string `yaml:"tags"`
}

// Webhook guards the sync webhooks.
type Webhook struct {
	TokenFile string `yaml:"token_file"`
}
