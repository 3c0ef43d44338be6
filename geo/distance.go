package geo

import "math"

// earthRadiusKm is the IUGG mean Earth radius. The haversine formula on a sphere is off by at most
// about 0.5% from the ellipsoid, far below what matters when ranking mirrors.
const earthRadiusKm = 6371.0088

// DistanceKm returns the great-circle distance in kilometres between two points given in degrees.
func DistanceKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	φ1, φ2 := lat1*rad, lat2*rad
	dφ := (lat2 - lat1) * rad
	dλ := (lon2 - lon1) * rad
	s1, s2 := math.Sin(dφ/2), math.Sin(dλ/2)
	h := s1*s1 + math.Cos(φ1)*math.Cos(φ2)*s2*s2
	// Rounding can push h a hair above 1 for antipodal points, where Asin would return NaN.
	h = min(h, 1)
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(h))
}
