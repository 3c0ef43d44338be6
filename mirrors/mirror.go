package mirrors

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/geo"
)

// DefaultSigningTTL is the lifetime asked of signed URLs when neither the mirror nor the caller of
// NewMirror sets one.
const DefaultSigningTTL = 15 * time.Minute

// Mirror is one configured mirror: where it is, whom it may serve, how much traffic it should take
// and the Backend that stores its blobs. It is immutable once built, so a Selector reads it without
// locks and a reload simply builds new ones.
type Mirror struct {
	name       string
	provider   string
	backend    Backend
	prefix     string
	enabled    bool
	assumed    bool // assume_present: no presence checks
	weight     int
	signingTTL time.Duration

	country   string
	continent string
	hasLoc    bool
	point     geo.Point // the configured location, ready for distances

	networks     []netip.Prefix
	netTag       string // "net:<name>", the tag geo gives addresses in networks
	cloudRegions []string
	asns         []uint32 // clients in these autonomous systems prefer this mirror

	onlyCountries    []string
	onlyContinents   []string
	excludeCountries []string
	family           family

	// nameHash seeds the rendezvous hash; derived from the name (not from process-random state)
	// so that every replica behind a load balancer picks the same mirror for a client.
	nameHash uint64
}

type family uint8

const (
	anyFamily family = iota
	ipv4Only
	ipv6Only
)

func (f family) String() string {
	switch f {
	case ipv4Only:
		return "ipv4"
	case ipv6Only:
		return "ipv6"
	}
	return ""
}

// NewMirror builds a Mirror from its configuration row and its backend. defaultTTL is the
// configuration's signing.ttl, used when the mirror sets no signing_ttl; DefaultSigningTTL when both
// are zero. The file itself is validated by package config; the errors here are for values that
// cannot be built at all, so that a Mirror never holds a half-understood setting.
func NewMirror(c config.Mirror, b Backend, defaultTTL time.Duration) (*Mirror, error) {
	if c.Name == "" {
		return nil, errors.New("mirror has no name")
	}
	if b == nil {
		return nil, fmt.Errorf("mirror %q: no backend", c.Name)
	}
	m := &Mirror{
		name:             c.Name,
		provider:         c.Provider,
		backend:          b,
		prefix:           c.Prefix,
		enabled:          c.IsEnabled(),
		assumed:          c.AssumePresent,
		weight:           c.EffectiveWeight(),
		country:          strings.ToUpper(c.Country),
		continent:        strings.ToUpper(c.Continent),
		netTag:           "net:" + c.Name,
		cloudRegions:     c.CloudRegions,
		asns:             c.ASNs,
		onlyCountries:    upper(c.OnlyCountries),
		onlyContinents:   upper(c.OnlyContinents),
		excludeCountries: upper(c.ExcludeCountries),
	}
	var errs []error
	if m.weight < 0 {
		errs = append(errs, fmt.Errorf("weight %d is negative", m.weight))
	}
	if m.continent == "" && m.country != "" {
		m.continent = geo.ContinentOf(m.country)
	}
	if c.Location != nil {
		if c.Location.Lat < -90 || c.Location.Lat > 90 || c.Location.Lon < -180 || c.Location.Lon > 180 {
			errs = append(errs, fmt.Errorf("location %v,%v is not a point on Earth", c.Location.Lat, c.Location.Lon))
		}
		m.hasLoc, m.point = true, geo.PointAt(c.Location.Lat, c.Location.Lon)
	}
	for _, n := range c.Networks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("networks: %w", err))
			continue
		}
		m.networks = append(m.networks, p.Masked())
	}
	switch strings.ToLower(c.AddressFamily) {
	case "":
	case "ipv4":
		m.family = ipv4Only
	case "ipv6":
		m.family = ipv6Only
	default:
		errs = append(errs, fmt.Errorf("address_family %q is not ipv4 or ipv6", c.AddressFamily))
	}
	switch {
	case c.SigningTTL > 0:
		m.signingTTL = c.SigningTTL
	case c.SigningTTL < 0:
		errs = append(errs, fmt.Errorf("signing_ttl %v is negative", c.SigningTTL))
	case defaultTTL > 0:
		m.signingTTL = defaultTTL
	default:
		m.signingTTL = DefaultSigningTTL
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("mirror %q: %w", c.Name, err)
	}
	h := fnv.New64a()
	h.Write([]byte(c.Name))
	m.nameHash = h.Sum64()
	return m, nil
}

func upper(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToUpper(s)
	}
	return out
}

// Name returns the mirror's configured name, as used in X-Mirror and in metrics labels.
func (m *Mirror) Name() string { return m.name }

// Provider returns the configured provider (s3, gcs, http).
func (m *Mirror) Provider() string { return m.provider }

// Backend returns the storage service behind the mirror.
func (m *Mirror) Backend() Backend { return m.backend }

// Prefix returns the object-key prefix; see Key.
func (m *Mirror) Prefix() string { return m.prefix }

// Networks returns the parsed `networks`: clients in them are tagged "net:<name>" by geo and
// prefer this mirror. The slice is shared; do not modify it.
func (m *Mirror) Networks() []netip.Prefix { return m.networks }

// scope is the outcome of checking a client against a mirror's scope, kept as a small value so
// the hot path never formats a string.
type scope uint8

const (
	inScopeOK scope = iota
	outFamily
	outOnlyCountries
	outOnlyContinents
	outExcludeCountries
)

// scopeOf checks loc against the mirror's scope. A scope that cannot be evaluated (the client's
// country is unknown) excludes: an operator who restricts a mirror to some countries, or keeps it
// from others, usually has a legal reason.
func (m *Mirror) scopeOf(loc *geo.Location) scope {
	switch m.family {
	case ipv4Only:
		if !loc.Addr.Unmap().Is4() {
			return outFamily
		}
	case ipv6Only:
		if !loc.Addr.Unmap().Is6() {
			return outFamily
		}
	}
	if len(m.onlyCountries) > 0 && (loc.Country == "" || !contains(m.onlyCountries, loc.Country)) {
		return outOnlyCountries
	}
	if len(m.onlyContinents) > 0 && (loc.Continent == "" || !contains(m.onlyContinents, loc.Continent)) {
		return outOnlyContinents
	}
	if len(m.excludeCountries) > 0 && (loc.Country == "" || contains(m.excludeCountries, loc.Country)) {
		return outExcludeCountries
	}
	return inScopeOK
}

// scopeReason says why sc excludes the mirror, for explanations.
func (m *Mirror) scopeReason(sc scope) string {
	switch sc {
	case outFamily:
		return "address family: " + m.family.String() + " only"
	case outOnlyCountries:
		return fmt.Sprintf("out of scope: only_countries %v", m.onlyCountries)
	case outOnlyContinents:
		return fmt.Sprintf("out of scope: only_continents %v", m.onlyContinents)
	case outExcludeCountries:
		return fmt.Sprintf("out of scope: exclude_countries %v", m.excludeCountries)
	}
	return ""
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
