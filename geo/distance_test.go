package geo_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/happy-turtle/oci-proxy/geo"
)

func TestDistanceKm(t *testing.T) {
	const r = 6371.0088
	tests := []struct {
		name                   string
		lat1, lon1, lat2, lon2 float64
		want                   float64
	}{
		{"same point", 51.51, -0.13, 51.51, -0.13, 0},
		{"quarter of the equator", 0, 0, 0, 90, math.Pi / 2 * r},
		{"antipodes", 0, 0, 0, 180, math.Pi * r},
		{"pole to pole", 90, 0, -90, 0, math.Pi * r},
		{"across the antimeridian", 0, 179, 0, -179, 2 * math.Pi / 180 * r},
		{"London to Frankfurt", 51.51, -0.13, 50.11, 8.68, 637.86},
		{"Washington to Singapore", 38.90, -77.40, 1.35, 103.82, 15_537.77},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := geo.PointAt(tc.lat1, tc.lon1), geo.PointAt(tc.lat2, tc.lon2)
			got := a.DistanceKm(b)
			if math.Abs(got-tc.want) > 0.001*tc.want+1e-9 {
				t.Errorf("DistanceKm = %.3f, want %.3f", got, tc.want)
			}
			if back := b.DistanceKm(a); math.Abs(back-got) > 1e-9 {
				t.Errorf("not symmetric: %.6f and %.6f", got, back)
			}
		})
	}
}

// haversine is the textbook great-circle distance, the reference Point.DistanceKm must equal.
func haversine(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	φ1, φ2 := lat1*rad, lat2*rad
	s1, s2 := math.Sin((lat2-lat1)*rad/2), math.Sin((lon2-lon1)*rad/2)
	h := min(s1*s1+math.Cos(φ1)*math.Cos(φ2)*s2*s2, 1)
	return 2 * 6371.0088 * math.Asin(math.Sqrt(h))
}

func TestDistanceMatchesHaversine(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pairs := [][4]float64{{50.1, 8.7, 50.1, 8.7}, {50.1, 8.7, 50.1001, 8.7}, {0, 0, 0, 180}, {90, 0, -90, 0}, {1.35, 103.8, -36.8, 174.8}}
	for range 10000 {
		pairs = append(pairs, [4]float64{r.Float64()*180 - 90, r.Float64()*360 - 180, r.Float64()*180 - 90, r.Float64()*360 - 180})
	}
	for _, p := range pairs {
		want := haversine(p[0], p[1], p[2], p[3])
		got := geo.PointAt(p[0], p[1]).DistanceKm(geo.PointAt(p[2], p[3]))
		if math.Abs(got-want) > 1e-6 {
			t.Errorf("%v: %v km, haversine says %v km", p, got, want)
		}
	}
}
