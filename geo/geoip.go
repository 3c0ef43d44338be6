package geo

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/oschwald/geoip2-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/happy-turtle/oci-proxy/geo/codes"
)

// maxDatabaseSize bounds what OpenGeoIP reads into memory. GeoLite2 City is under 100 MB and the
// commercial databases a few hundred; a larger file is a wrong path, not a database.
const maxDatabaseSize = 1 << 30

// GeoIP looks addresses up in MaxMind databases: a City or Country database for country,
// continent and coordinates, and optionally an ASN database. It is safe for concurrent use.
//
// The databases are read into memory rather than memory-mapped: a mapped file rewritten in place
// under a running server (`cp new.mmdb city.mmdb`, a download to the same path) changes beneath
// the reader, and one truncated kills the process with SIGBUS on the next lookup. In memory, the
// file can be rewritten at will; a reload reads it again and refuses it if it is broken. The copy
// lives outside the Go heap where the platform allows (see readDatabase), so that a 60 MB City
// database does not double the heap size at which the garbage collector runs, and costs its size
// once, twice while a reload retires the old one.
//
// A lookup decodes only what a Location needs, and remembers decoded records by their place in
// the database (recordCache), so that the common lookup walks the search tree and decodes nothing.
//
// Close forgets the databases: lookups in flight finish on the copy they hold, later ones find
// nothing. That lets a reload swap in a new GeoIP and close the old one while requests still hold
// it.
type GeoIP struct {
	dbs atomic.Pointer[databases] // nil once closed
}

type databases struct {
	city      *maxminddb.Reader // City or Country; nil when not configured
	asn       *maxminddb.Reader // nil when not configured
	cityCache recordCache[cityRecord]
	asnCache  recordCache[asnRecord]
	addrs     addrCache
}

// OpenGeoIP reads the databases; either path may be "" to go without it. cityPath may name a City
// or a Country database (a Country database gives no coordinates), or any other MaxMind type
// carrying country data such as Enterprise; asnPath an ASN or ISP database. A file over 1 GiB is
// refused.
func OpenGeoIP(cityPath, asnPath string) (*GeoIP, error) {
	d := &databases{}
	if cityPath != "" {
		r, err := openReader(cityPath, "City or Country", func(r *geoip2.Reader) error {
			_, err := r.Country(netip.IPv6Unspecified())
			return err
		})
		if err != nil {
			return nil, err
		}
		d.city = r
	}
	if asnPath != "" {
		r, err := openReader(asnPath, "ASN", func(r *geoip2.Reader) error {
			_, err := r.ASN(netip.IPv6Unspecified())
			return err
		})
		if err != nil {
			return nil, err
		}
		d.asn = r
	}
	g := &GeoIP{}
	g.dbs.Store(d)
	return g, nil
}

// openReader reads path and checks, with probe, that its database type supports the lookups we
// will make, so that a City database given as the ASN one is refused at startup rather than
// answering nothing for every request. geoip2 knows MaxMind's database types and which lookups
// each supports; the lookups themselves go through the maxminddb reader it is built on, which
// lets them decode only the fields they need.
func openReader(path, want string, probe func(*geoip2.Reader) error) (*maxminddb.Reader, error) {
	data, release, err := readDatabase(path)
	if err != nil {
		return nil, fmt.Errorf("open GeoIP database %s: %w", path, err)
	}
	// The readers keep data and nothing else holds it, so nobody can change it under them.
	typed, err := geoip2.OpenBytes(data)
	if err != nil {
		release()
		return nil, fmt.Errorf("open GeoIP database %s: %w", path, err)
	}
	if err := probe(typed); err != nil {
		if _, wrongType := errors.AsType[geoip2.InvalidMethodError](err); wrongType {
			release()
			return nil, fmt.Errorf("open GeoIP database %s: database type %q is not a %s database",
				path, typed.Metadata().DatabaseType, want)
		}
		// Any other error is about the probe's record, not the database type.
	}
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		release()
		return nil, fmt.Errorf("open GeoIP database %s: %w", path, err)
	}
	// The memory goes when the reader does: after Close, once the last lookup holding it is done.
	runtime.AddCleanup(r, func(release func()) { release() }, release)
	return r, nil
}

// openDatabase opens path for readDatabase and returns its size, refusing a file over
// maxDatabaseSize.
func openDatabase(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() > maxDatabaseSize {
		err = tooLarge(fi.Size())
	}
	if err != nil {
		f.Close() // read-only: closing cannot lose anything
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

func tooLarge(n int64) error {
	return fmt.Errorf("%d bytes is more than the %d (1 GiB) a GeoIP database may have", n, maxDatabaseSize)
}

// DatabaseTypes reports the types of the open databases ("" for none), for logs and explanations.
func (g *GeoIP) DatabaseTypes() (city, asn string) {
	if g == nil {
		return "", ""
	}
	d := g.dbs.Load()
	if d == nil {
		return "", ""
	}
	if d.city != nil {
		city = d.city.Metadata.DatabaseType
	}
	if d.asn != nil {
		asn = d.asn.Metadata.DatabaseType
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
	d := g.dbs.Load()
	if d == nil {
		return loc
	}
	e := d.addrs.get(addr)
	if e == nil {
		e = d.lookup(addr)
		d.addrs.put(e)
	}
	return e.location(loc)
}

// location is loc with what e's records say.
func (e *addrEntry) location(loc Location) Location {
	if c := e.city; c != nil {
		loc.Country = c.rec.country
		loc.Continent = c.rec.continent
		if loc.Continent == "" {
			loc.Continent = codes.ContinentOf(loc.Country)
		}
		if c.rec.hasLat && c.rec.hasLon {
			loc.Lat, loc.Lon, loc.HasCoords = c.rec.lat, c.rec.lon, true
		}
	}
	if a := e.asn; a != nil {
		loc.ASN = a.rec.asn
	}
	return loc
}

// lookup finds addr's records by walking the databases' search trees.
func (d *databases) lookup(addr netip.Addr) *addrEntry {
	e := &addrEntry{addr: addr}
	if d.city != nil {
		e.city = lookup(&d.cityCache, d.city.Lookup(addr))
	}
	if d.asn != nil {
		e.asn = lookup(&d.asnCache, d.asn.Lookup(addr))
	}
	return e
}

// ErrClosed is Ready's answer once Close has been called.
var ErrClosed = errors.New("GeoIP databases closed")

// Ready reports whether lookups can find anything: nil until Close.
func (g *GeoIP) Ready() error {
	if g.dbs.Load() == nil {
		return ErrClosed
	}
	return nil
}

// Close forgets the databases; their memory goes once the lookups in flight are done with it. It
// is safe to call more than once, concurrently with lookups, and always returns nil.
func (g *GeoIP) Close() error {
	if g != nil {
		g.dbs.Store(nil)
	}
	return nil
}
