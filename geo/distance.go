package geo

import "math"

// earthRadiusKm is the IUGG mean Earth radius. A great circle on a sphere is off by at most about
// 0.5% from the ellipsoid, far below what matters when ranking mirrors.
const earthRadiusKm = 6371.0088

// Point is a place on Earth as a unit vector. Converting once per place makes each distance cost a
// square root and an arc sine instead of the six trigonometric calls of the haversine formula,
// which dominated the cost of ranking mirrors. The zero Point is not a place: use PointAt.
type Point struct{ x, y, z float64 }

// PointAt returns the point at latitude lat and longitude lon, in degrees.
func PointAt(lat, lon float64) Point {
	const rad = math.Pi / 180
	sφ, cφ := math.Sincos(lat * rad)
	sλ, cλ := math.Sincos(lon * rad)
	return Point{cφ * cλ, cφ * sλ, sφ}
}

// DistanceKm returns the great-circle distance to q in kilometres, equal to the haversine formula's.
// The chord between the two vectors is 2·sin(θ/2); summing squared differences, rather than taking
// a dot product, keeps short distances exact.
func (p Point) DistanceKm(q Point) float64 {
	dx, dy, dz := p.x-q.x, p.y-q.y, p.z-q.z
	half := math.Sqrt(dx*dx+dy*dy+dz*dz) / 2
	// Rounding can push half a hair above 1 for antipodal points, where Asin would return NaN.
	return 2 * earthRadiusKm * math.Asin(min(half, 1))
}
