package config

import "time"

// The types below are config.yaml as written: the rows the decoder fills, with the file's spelling
// and its optional values. They never leave this package; resolve turns them into Config.

type rawConfig struct {
	Name            string      `yaml:"name"`
	Listen          string      `yaml:"listen"`
	Upstream        string      `yaml:"upstream"`
	TrustedProxies  []string    `yaml:"trusted_proxies"`
	ForwardedHeader string      `yaml:"forwarded_header"`
	Unlocated       string      `yaml:"unlocated"`
	GeoIP           rawGeoIP    `yaml:"geoip"`
	CloudRanges     []rawRanges `yaml:"cloud_ranges"`
	Mirrors         []rawMirror `yaml:"mirrors"`
	Signing         rawSigning  `yaml:"signing"`
	Presence        rawPresence `yaml:"presence"`
	Admin           rawAdmin    `yaml:"admin"`
	Routes          []rawRoute  `yaml:"routes"`
	Cache           rawCache    `yaml:"cache"`
	Sync            rawSync     `yaml:"sync"`
}

type rawGeoIP struct {
	Database    string `yaml:"database"`
	ASNDatabase string `yaml:"asn_database"`
}

type rawRanges struct {
	Cloud  string `yaml:"cloud"`
	Format string `yaml:"format"`
	File   string `yaml:"file"`
}

type rawLocation struct {
	Lat float64 `yaml:"lat"`
	Lon float64 `yaml:"lon"`
}

type rawMirror struct {
	Name             string        `yaml:"name"`
	Provider         string        `yaml:"provider"`
	Enabled          *bool         `yaml:"enabled"`
	Bucket           string        `yaml:"bucket"`
	Region           string        `yaml:"region"`
	Endpoint         string        `yaml:"endpoint"`
	Profile          string        `yaml:"profile"`
	CredentialsFile  string        `yaml:"credentials_file"`
	BaseURL          string        `yaml:"base_url"`
	Public           bool          `yaml:"public"`
	Prefix           string        `yaml:"prefix"`
	AssumePresent    bool          `yaml:"assume_present"`
	Country          string        `yaml:"country"`
	Continent        string        `yaml:"continent"`
	Location         *rawLocation  `yaml:"location"`
	Networks         []string      `yaml:"networks"`
	CloudRegions     []string      `yaml:"cloud_regions"`
	ASNs             []uint32      `yaml:"asns"`
	OnlyCountries    []string      `yaml:"only_countries"`
	OnlyContinents   []string      `yaml:"only_continents"`
	ExcludeCountries []string      `yaml:"exclude_countries"`
	AddressFamily    string        `yaml:"address_family"`
	Weight           *int          `yaml:"weight"`
	SigningTTL       time.Duration `yaml:"signing_ttl"`
	Sync             string        `yaml:"sync"`
}

type rawSigning struct {
	TTL time.Duration `yaml:"ttl"`
}

// rawPresence's pointer tells "not set" (the default) from an explicit 0 (no budget).
type rawPresence struct {
	Timeout            time.Duration `yaml:"timeout"`
	HitTTL             time.Duration `yaml:"hit_ttl"`
	MissTTL            time.Duration `yaml:"miss_ttl"`
	CacheSize          int           `yaml:"cache_size"`
	HealthAfter        int           `yaml:"health_after"`
	Backoff            time.Duration `yaml:"backoff"`
	MaxChecksPerSecond *int          `yaml:"max_checks_per_second"`
}

type rawAdmin struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
}

type rawRoute struct {
	Prefix   string  `yaml:"prefix"`
	Upstream string  `yaml:"upstream"`
	Mode     string  `yaml:"mode"`
	Auth     rawAuth `yaml:"auth"`
}

type rawAuth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	DockerConfig string `yaml:"docker_config"`
	Client       bool   `yaml:"client"`
}

// rawCache's pointers tell "not set" (the default) from an explicit 0 (off).
type rawCache struct {
	TagTTL     *time.Duration `yaml:"tag_ttl"`
	StaleGrace *time.Duration `yaml:"stale_grace"`
	MaxBytes   *int64         `yaml:"max_bytes"`
}

type rawSync struct {
	Repositories []rawSyncRepository `yaml:"repositories"`
	Webhook      rawWebhook          `yaml:"webhook"`
}

type rawSyncRepository struct {
	Name string   `yaml:"name"`
	Tags []string `yaml:"tags"`
}

type rawWebhook struct {
	TokenFile string `yaml:"token_file"`
}
