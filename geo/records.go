package geo

import (
	"sync/atomic"

	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2/mmdbdata"
)

// cityRecord is what a Location needs of a City, Country or Enterprise record: country,
// continent and coordinates. Decoding just these, rather than the whole record with its names in
// eight languages, subdivisions and traits, is what makes a lookup cheap.
type cityRecord struct {
	country, continent string
	lat, lon           float64
	hasLat, hasLon     bool
}

// UnmarshalMaxMindDBCursor decodes the record's country.iso_code, continent.code and
// location.{latitude,longitude} and skips everything else (mmdbdata.CursorUnmarshaler). A value
// of an unexpected kind is an error: the record counts as absent rather than half read.
func (r *cityRecord) UnmarshalMaxMindDBCursor(c mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	return readMap(c, func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error) {
		switch string(key) {
		case "country":
			return readString(v, "iso_code", &r.country)
		case "continent":
			return readString(v, "code", &r.continent)
		case "location":
			return readMap(v, func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error) {
				var err error
				switch string(key) {
				case "latitude":
					r.lat, v, err = v.ReadFloat()
					r.hasLat = err == nil
					return v, err
				case "longitude":
					r.lon, v, err = v.ReadFloat()
					r.hasLon = err == nil
					return v, err
				}
				return v.Skip()
			})
		}
		return v.Skip()
	})
}

// asnRecord is the AS number of an ASN or ISP record; the organisation's name is not needed.
type asnRecord struct {
	asn uint32
}

// UnmarshalMaxMindDBCursor decodes autonomous_system_number and skips the rest.
func (r *asnRecord) UnmarshalMaxMindDBCursor(c mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	return readMap(c, func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error) {
		if string(key) != "autonomous_system_number" {
			return v.Skip()
		}
		n, next, err := v.ReadUint()
		if err == nil && n <= 1<<32-1 {
			r.asn = uint32(n)
		}
		return next, err
	})
}

// readMap calls field for each entry of the map at c, which must return the cursor after the
// entry's value, and returns the cursor after the map.
func readMap(c mmdbdata.Cursor, field func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error)) (mmdbdata.Cursor, error) {
	m, err := c.MapReader()
	if err != nil {
		return mmdbdata.Cursor{}, err
	}
	next := m.First()
	for range m.Len() {
		key, v, err := next.ReadMapKey()
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
		if next, err = field(key, v); err != nil {
			return mmdbdata.Cursor{}, err
		}
	}
	return m.End(next)
}

// readString stores in *dst the string under name in the map at c. The reader's string cache
// makes repeated codes ("DE", "EU") cost no allocation.
func readString(c mmdbdata.Cursor, name string, dst *string) (mmdbdata.Cursor, error) {
	return readMap(c, func(key []byte, v mmdbdata.Cursor) (mmdbdata.Cursor, error) {
		if string(key) != name {
			return v.Skip()
		}
		var err error
		*dst, v, err = v.ReadString()
		return v, err
	})
}

// recordCacheBits sets the size of a recordCache: 4096 slots, 32 KiB of pointers per database.
const recordCacheBits = 12

// recordCache remembers decoded records by their offset in the database. Many networks share one
// record (every network of a city, or of an AS), and the addresses behind a registry's traffic
// (CI runners, cluster nodes, NATs) are few, so most lookups find their record here and cost a
// walk down the search tree and no decoding or allocation at all.
//
// It is direct-mapped: a slot holds the last record whose offset hashed to it, so it is bounded
// without any bookkeeping, a read is one atomic load, and a miss costs one decode and one small
// allocation. Records never change for a given database; a reload builds a new GeoIP and with it
// new caches.
type recordCache[T any] struct {
	slots [1 << recordCacheBits]atomic.Pointer[cached[T]]
}

type cached[T any] struct {
	offset uintptr
	rec    T
}

// lookup returns the record at res's offset, decoding and remembering it when it is not cached.
// It is nil for no record, or one that cannot be decoded (which is not cached). The record is
// shared and must not be modified.
func lookup[T any, P interface {
	*T
	mmdbdata.CursorUnmarshaler
}](c *recordCache[T], res maxminddb.Result) *cached[T] {
	if !res.Found() {
		return nil
	}
	off := res.Offset()
	slot := &c.slots[(uint64(off)*0x9e3779b97f4a7c15)>>(64-recordCacheBits)]
	if e := slot.Load(); e != nil && e.offset == off {
		return e
	}
	e := &cached[T]{offset: off}
	if err := res.Decode(P(&e.rec)); err != nil {
		return nil
	}
	slot.Store(e)
	return e
}
