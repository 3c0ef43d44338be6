package mirrors

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"

	"github.com/happy-turtle/oci-proxy/geo"
)

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
	checkCreds bool // the background probe asks about ProbeKey
	weight     int
	signingTTL time.Duration

	country   string
	continent string
	hasLoc    bool
	point     geo.Point // the configured location, ready for distances

	networks     []netip.Prefix
	netTag       string // geo.NetTag(name), the tag geo gives addresses in networks
	cloudRegions []string
	asns         []uint32 // clients in these autonomous systems prefer this mirror

	onlyCountries    []string
	onlyContinents   []string
	excludeCountries []string
	family           Family

	// nameHash seeds the rendezvous hash; derived from the name (not from process-random state)
	// so that every replica behind a load balancer picks the same mirror for a client.
	nameHash uint64
}

// Spec is what a Mirror is built from: one row of the mirror table, already checked and with its
// defaults applied (internal/app translates the configuration into it). Codes are upper case.
type Spec struct {
	Name          string        // as in X-Mirror and metric labels
	Provider      string        // s3, gcs or http: shown in explanations only
	Prefix        string        // object key prefix; see Key
	Disabled      bool          // configured but off: never a candidate
	AssumePresent bool          // skip presence checks: the mirror holds every blob
	Weight        int           // share among equally ranked mirrors; 0 takes no share
	SigningTTL    time.Duration // lifetime of signed URLs; must be positive

	// CheckCredentials makes the background probe ask about ProbeKey, so that credentials the
	// service no longer accepts take the mirror out rather than make it look empty. For mirrors
	// the proxy reaches with credentials of its own, which sync writes the probe object into:
	// not for public ones, whose 403s mean nothing but absence.
	CheckCredentials bool

	Country   string
	Continent string
	Location  *geo.Point // nil: no distance ranking for this mirror

	Networks     []netip.Prefix // clients here prefer this mirror (tagged geo.NetTag(Name))
	CloudRegions []string       // clients in these cloud regions ("aws:us-east-1") prefer it
	ASNs         []uint32       // clients in these autonomous systems prefer it

	OnlyCountries    []string // serve only clients in these countries; none: all
	OnlyContinents   []string // serve only clients on these continents; none: all
	ExcludeCountries []string // never serve clients in these countries
	Family           Family
}

// Family restricts a mirror to clients of one address family.
type Family uint8

const (
	AnyFamily Family = iota
	IPv4Only
	IPv6Only
)

func (f Family) String() string {
	switch f {
	case IPv4Only:
		return "ipv4"
	case IPv6Only:
		return "ipv6"
	}
	return ""
}

// NewMirror builds a Mirror from its spec and its backend. It does not check the spec: that is
// the configuration's job, done once when the file is read.
func NewMirror(s Spec, b Backend) *Mirror {
	m := &Mirror{
		name:             s.Name,
		provider:         s.Provider,
		backend:          b,
		prefix:           s.Prefix,
		enabled:          !s.Disabled,
		assumed:          s.AssumePresent,
		checkCreds:       s.CheckCredentials,
		weight:           s.Weight,
		signingTTL:       s.SigningTTL,
		country:          s.Country,
		continent:        s.Continent,
		networks:         s.Networks,
		netTag:           geo.NetTag(s.Name),
		cloudRegions:     s.CloudRegions,
		asns:             s.ASNs,
		onlyCountries:    s.OnlyCountries,
		onlyContinents:   s.OnlyContinents,
		excludeCountries: s.ExcludeCountries,
		family:           s.Family,
	}
	if s.Location != nil {
		m.hasLoc, m.point = true, *s.Location
	}
	h := fnv.New64a()
	h.Write([]byte(s.Name))
	m.nameHash = h.Sum64()
	return m
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
	case IPv4Only:
		if !loc.Addr.Unmap().Is4() {
			return outFamily
		}
	case IPv6Only:
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
