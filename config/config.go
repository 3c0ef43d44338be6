// Package config reads config.yaml once: it decodes the file strictly (unknown keys refused),
// checks every value, applies the defaults, and hands out typed, resolved values (netip.Prefix,
// *url.URL, enums, durations) with each problem reported as "file:line: message", all at once.
// A Config is immutable once Load returns it; a reload builds a new one.
//
// It does not open databases, buckets or sockets, and it knows nothing of the packages that use
// it: internal/app translates a Config into each package's own input. A value it accepts can be
// built; one it refuses is refused here, with the same message for validate, serve and resolve.
package config

import (
	"net/netip"
	"net/url"
	"time"
)

// Config is a whole configuration file, checked and resolved.
type Config struct {
	// File is the file it was read from, for messages; EnvFile without one.
	File string
	// Name is the registry's public host name as users type it (images.example.dev), shown on the
	// index page; never used to build a redirect. "" when not set.
	Name string
	// Listen is the service's address, host:port.
	Listen string
	// Upstream is the default route's registry URL, with its /v2/ path and ending in "/"; nil when
	// a route with prefix "" takes its place.
	Upstream *url.URL
	// TrustedProxies are the addresses whose forwarding headers are believed, unmapped and masked.
	TrustedProxies []netip.Prefix
	// ForwardedHeader is the header the trusted proxies write.
	ForwardedHeader Header
	GeoIP           GeoIP
	CloudRanges     []CloudRanges
	Mirrors         []Mirror
	Signing         Signing
	Presence        Presence
	Admin           Admin
	Routes          []Route
	Cache           Cache
	Sync            Sync

	// Unlocated is where the blobs of a client that cannot be located go.
	Unlocated Unlocated
}

// Header is the forwarding header the trusted proxies write.
type Header uint8

const (
	XForwardedFor Header = iota // X-Forwarded-For (the default)
	Forwarded                   // RFC 7239 Forwarded
	AnyHeader                   // either; only for proxies known to write both
)

// Unlocated is where the blobs of a client go when neither GeoIP nor a network rule places it.
type Unlocated uint8

const (
	UnlocatedMirrors  Unlocated = iota // the mirrors without a scope, by weight (the default)
	UnlocatedUpstream                  // the upstream
)

func (u Unlocated) String() string {
	if u == UnlocatedUpstream {
		return "upstream"
	}
	return "mirrors"
}

// GeoIP names the MaxMind databases, as absolute paths; "" when not configured.
type GeoIP struct {
	Database    string // City or Country database (.mmdb)
	ASNDatabase string // ASN database (.mmdb)
}

// RangeFormat is the format of a cloud provider's published ranges file.
type RangeFormat uint8

const (
	AWSIPRanges  RangeFormat = iota + 1 // AWS ip-ranges.json
	GCPCloudJSON                        // Google Cloud cloud.json
)

// CloudRanges is a cloud provider's published address ranges, mapped to "<cloud>:<region>" tags.
type CloudRanges struct {
	Cloud  string // aws | gcp
	Format RangeFormat
	File   string // absolute path
}

// Provider is the kind of storage a mirror is.
type Provider uint8

const (
	S3 Provider = iota + 1
	GCS
	HTTP
)

func (p Provider) String() string {
	switch p {
	case S3:
		return "s3"
	case GCS:
		return "gcs"
	case HTTP:
		return "http"
	}
	return ""
}

// Family restricts a mirror to clients of one address family.
type Family uint8

const (
	AnyFamily Family = iota
	IPv4Only
	IPv6Only
)

// Point is a place on Earth in degrees: lat in [-90, 90], lon in [-180, 180].
type Point struct{ Lat, Lon float64 }

// Mirror is one row of the mirror table, with its defaults applied.
type Mirror struct {
	Name     string
	Line     int // where the row starts in File
	Provider Provider
	Enabled  bool

	// Storage. Which fields are set depends on Provider; the others are zero.
	Bucket          string
	Region          string   // s3 (may be "" with an Endpoint)
	Endpoint        *url.URL // s3: an S3-compatible service, path style; nil for AWS
	Profile         string   // s3: a shared-config profile
	CredentialsFile string   // absolute path; "" for the provider's default chain
	BaseURL         *url.URL // http: ends in "/"
	Public          bool     // gcs: unsigned public URLs
	Prefix          string   // object key prefix: "" or a relative path ending in "/"
	AssumePresent   bool     // no presence checks: the mirror holds every blob

	// Placement and scope. Codes are upper case and valid.
	Country          string
	Continent        string // the country's when not given
	Location         *Point // nil when not given
	Networks         []netip.Prefix
	CloudRegions     []string // like "aws:us-east-1"
	ASNs             []uint32
	OnlyCountries    []string
	OnlyContinents   []string
	ExcludeCountries []string
	AddressFamily    Family
	Weight           int           // 0 to MaxWeight; DefaultWeight when not given
	SigningTTL       time.Duration // the mirror's signing_ttl, else signing.ttl
	// Sync is what `oci-proxy sync` copies into the mirror.
	Sync SyncMode
}

// SyncMode is what `oci-proxy sync` copies into a mirror.
type SyncMode uint8

const (
	// SyncAll copies every configured repository (the default).
	SyncAll SyncMode = iota
	// SyncDemand copies only what clients near the mirror asked for and it lacked, with
	// `oci-proxy sync --demand`; plain `oci-proxy sync` leaves it alone.
	SyncDemand
)

func (m SyncMode) String() string {
	if m == SyncDemand {
		return "demand"
	}
	return "all"
}

// Signing sets the lifetime of signed URLs.
type Signing struct {
	TTL time.Duration
}

// Presence tunes the presence checks and their cache. Every field is set.
type Presence struct {
	Timeout     time.Duration // per check; 0 never: DefaultTimeout
	HitTTL      time.Duration
	MissTTL     time.Duration
	CacheSize   int
	HealthAfter int
	Backoff     time.Duration
	// MaxChecksPerSecond is each mirror's budget of checks for blobs not in the cache; 0: no
	// budget (written so in the file; left out, it is DefaultMaxChecksPerSecond).
	MaxChecksPerSecond int
}

// Admin enables the explanation endpoints.
type Admin struct {
	Enabled bool
	Listen  string // "" serves them on Config.Listen
}

// Mode is how a route serves manifests, tags and referrers.
type Mode uint8

const (
	Redirect Mode = iota // a 307 to the upstream
	Proxy                // fetched from the upstream and served by oci-proxy
)

func (m Mode) String() string {
	if m == Proxy {
		return "proxy"
	}
	return "redirect"
}

// Route sends names under Prefix to another upstream.
type Route struct {
	Prefix   string   // "" or a repository name ending in "/"
	Upstream *url.URL // with its /v2/ path, ending in "/"
	Mode     Mode
	Auth     Auth
	Line     int
}

// Auth says whose credentials a route's upstream requests carry. At most one of the three is set;
// the zero value is anonymous (the upstream's anonymous tokens).
type Auth struct {
	// Username and PasswordFile (an absolute path) are the proxy's own credentials.
	Username     string
	PasswordFile string
	// DockerConfig is a Docker config.json (absolute path) holding the proxy's own credentials,
	// directly or through a credential helper.
	DockerConfig string
	// Client relays each client's own credentials: the proxy holds none (proxy mode only).
	Client bool
}

// Own reports whether the proxy presents credentials of its own.
func (a Auth) Own() bool { return a.Username != "" || a.DockerConfig != "" }

// Cache tunes the manifest cache of proxy-mode routes.
type Cache struct {
	// TagTTL is how long an answer by tag (a manifest, a tag list, referrers) is served from the
	// cache; 0: never (each request asks the upstream).
	TagTTL time.Duration
	// StaleGrace is how long after TagTTL such an answer is still served, marked stale, while
	// the upstream is unreachable or failing; 0: never.
	StaleGrace time.Duration
	// MaxBytes bounds each proxy route's cache; 0: no cache at all.
	MaxBytes int64
}

// Sync configures `oci-proxy sync`.
type Sync struct {
	Repositories []SyncRepository
	Webhook      Webhook
}

// SyncRepository is a repository to copy, with tag globs (all tags when empty); Name is a valid
// repository name as clients use it and every glob is valid for path.Match.
type SyncRepository struct {
	Name string
	Tags []string
}

// Webhook guards the sync webhooks.
type Webhook struct {
	TokenFile string // absolute path; "" when not configured
}
