package geo

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/happy-turtle/oci-proxy/geo/codes"
	"github.com/oschwald/geoip2-golang/v2"
)

// GeoIP looks addresses up in MaxMind databases: a City or Country database for country,
// continent and coordinates, and optionally an ASN database. It is safe for concurrent use.
//
// The databases are memory-mapped, so Close waits for lookups in flight instead of pulling the
// mapping from under them; a lookup after Close finds nothing. That lets a reload swap in a new
// GeoIP and close the old one while requests still hold it.
type GeoIP struct {
	mu     sync.RWMutex
	city   *geoip2.Reader // City or Country; nil when not configured
	asn    *geoip2.Reader // nil when not configured
	closed bool
}

// OpenGeoIP opens the databases; either path may be "" to go without it. cityPath may name a City
// or a Country database (a Country database gives no coordinates), or any other MaxMind type
// carrying country data such as Enterprise; asnPath an ASN or ISP database.
func OpenGeoIP(cityPath, asnPath string) (*GeoIP, error) {
	g := &GeoIP{}
	if cityPath != "" {
		r, err := openReader(cityPath, "City or Country", func(r *geoip2.Reader) error {
			_, err := r.Country(netip.IPv6Unspecified())
			return err
		})
		if err != nil {
			return nil, err
		}
		g.city = r
	}
	if asnPath != "" {
		r, err := openReader(asnPath, "ASN", func(r *geoip2.Reader) error {
			_, err := r.ASN(netip.IPv6Unspecified())
			return err
		})
		if err != nil {
			return nil, errors.Join(err, g.Close())
		}
		g.asn = r
	}
	return g, nil
}

// openReader opens path and checks, with probe, that its database type supports the lookups we
// will make, so that a City database given as the ASN one is refused at startup rather than
// answering nothing for every request.
func openReader(path, want string, probe func(*geoip2.Reader) error) (*geoip2.Reader, error) {
	r, err := geoip2.Open(path)
	if err != nil {
		if r != nil {
			_ = r.Close() // already failing; the type error is the one worth reporting
		}
		return nil, fmt.Errorf("open GeoIP database %s: %w", path, err)
	}
	if err := probe(r); err != nil {
		if _, wrongType := errors.AsType[geoip2.InvalidMethodError](err); wrongType {
			_ = r.Close()
			return nil, fmt.Errorf("open GeoIP database %s: database type %q is not a %s database",
				path, r.Metadata().DatabaseType, want)
		}
		// Any other error is about the probe's record, not the database type.
	}
	return r, nil
}

// DatabaseTypes reports the types of the open databases ("" for none), for logs and explanations.
func (g *GeoIP) DatabaseTypes() (city, asn string) {
	if g == nil {
		return "", ""
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return "", ""
	}
	if g.city != nil {
		city = g.city.Metadata().DatabaseType
	}
	if g.asn != nil {
		asn = g.asn.Metadata().DatabaseType
	}
	return city, asn
}

// Lookup returns what the databases know of addr. Without a record, or on a nil GeoIP, only Addr
// is set. A record that cannot be decoded counts as no record: a damaged entry must cost one
// client its nearest mirror, not its image pull.
func (g *GeoIP) Lookup(addr netip.Addr) Location {
	addr = NormalizeAddr(addr)
	loc := Location{Addr: addr}
	if g == nil || !addr.IsValid() {
		return loc
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return loc
	}
	if g.city != nil {
		if c, err := g.city.City(addr); err == nil {
			loc.Country = c.Country.ISOCode
			loc.Continent = c.Continent.Code
			if loc.Continent == "" {
				loc.Continent = codes.ContinentOf(loc.Country)
			}
			if c.Location.HasCoordinates() {
				loc.Lat, loc.Lon, loc.HasCoords = *c.Location.Latitude, *c.Location.Longitude, true
			}
		}
	}
	if g.asn != nil {
		if a, err := g.asn.ASN(addr); err == nil {
			loc.ASN = uint32(a.AutonomousSystemNumber)
		}
	}
	return loc
}

// ErrClosed is Ready's answer once Close has been called.
var ErrClosed = errors.New("GeoIP databases closed")

// Ready reports whether lookups can find anything: nil while the databases are open.
func (g *GeoIP) Ready() error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return ErrClosed
	}
	return nil
}

// Close releases the databases once lookups in flight are done. It is safe to call more than once.
func (g *GeoIP) Close() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	if g.city != nil {
		if err := g.city.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close GeoIP database: %w", err))
		}
	}
	if g.asn != nil {
		if err := g.asn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close ASN database: %w", err))
		}
	}
	return errors.Join(errs...)
}
