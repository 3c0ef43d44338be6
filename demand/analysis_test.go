package demand

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestQuantile(t *testing.T) {
	h := Histogram{Bounds: []float64{100, 1000, 10000}, Buckets: []float64{10, 10, 30}, Count: 40}
	for _, tc := range []struct{ q, want float64 }{
		{0.25, 100},  // rank 10: the end of the first bucket
		{0.5, 5500},  // rank 20: halfway through (1000, 10000]
		{0.125, 50},  // rank 5: halfway through (0, 100]
		{0.9, 10000}, // rank 36: the overflow bucket: the last bound
	} {
		if got, ok := Quantile(tc.q, h); !ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Quantile(%v) = %v, %v; want %v", tc.q, got, ok, tc.want)
		}
	}
	if _, ok := Quantile(0.5, Histogram{}); ok {
		t.Error("Quantile of an empty histogram")
	}
}

func TestAnalyze(t *testing.T) {
	d := Data{
		Misses: []Miss{{Mirror: "ap-south", Repository: "app", Count: 30}, {Mirror: "ap-south", Repository: Other, Count: 2}},
		Served: []Served{
			{Continent: "AS", Mirror: "eu-west", Requests: 30},
			{Continent: "AS", Mirror: "upstream", Requests: 2},
			{Continent: "EU", Mirror: "eu-west", Requests: 100},
			{Continent: "NA", Mirror: "eu-west", Requests: 10},
		},
		Distance: []Histogram{
			{Continent: "AS", Bounds: DistanceBuckets, Buckets: []float64{0, 0, 0, 0, 0, 0, 0, 30, 30, 30}, Count: 30},
			{Continent: "EU", Bounds: DistanceBuckets, Buckets: []float64{0, 0, 0, 90, 100, 100, 100, 100, 100, 100}, Count: 100},
			{Continent: "NA", Bounds: DistanceBuckets, Buckets: []float64{0, 0, 0, 0, 0, 0, 0, 10, 10, 10}, Count: 10},
		},
	}
	ms := []MirrorInfo{{Name: "eu-west", Continent: "EU", Sync: "all"}, {Name: "ap-south", Continent: "AS", Sync: "demand"}}
	a := Analyze(d, ms, []string{"prometheus=http://p"}, 86400)
	if m := a.Mirrors[1]; m.Mirror != "ap-south" || m.Missed != 32 || m.Served != 0 || m.Repositories[0] != (RepoDemand{"app", 30}) {
		t.Errorf("ap-south = %+v", m)
	}
	if m := a.Mirrors[2]; m.Mirror != "upstream" || m.Served != 2 {
		t.Errorf("upstream = %+v", m)
	}
	byCont := map[string]ContinentDemand{}
	for _, c := range a.Continents {
		byCont[c.Continent] = c
	}
	if c := byCont["EU"]; c.OnContinent != 1 || c.MedianKm == nil || *c.MedianKm < 250 || *c.MedianKm > 500 {
		t.Errorf("EU = %+v", c)
	}
	if c := byCont["AS"]; c.OnContinent != 0 || math.Abs(c.Upstream-2.0/32) > 1e-9 || c.MedianKm == nil || *c.MedianKm < 4000 || *c.MedianKm > 8000 {
		t.Errorf("AS = %+v", c)
	}
	// Asia's 30 requests at 4,000-8,000 km save most; North America's 10 next; Europe none.
	if len(a.NewMirror) != 2 || a.NewMirror[0].Continent != "AS" || a.NewMirror[0].SavedKm != 30*(6000-NearKm) ||
		a.NewMirror[0].Mirrors[0] != "ap-south" || a.NewMirror[1].Continent != "NA" || a.NewMirror[0].Far != 30 {
		t.Errorf("new mirror = %+v", a.NewMirror)
	}
	var b bytes.Buffer
	if err := a.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"over 24h", "ap-south (AS, sync: demand)", "app 30, other 2", "1. AS: 150000 km·requests saved", "mirrors there: ap-south"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}
