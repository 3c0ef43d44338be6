package demand

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakePrometheus answers the three queries Fetch sends like Prometheus 2.42 does.
func fakePrometheus(t *testing.T, answers map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prom/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query().Get("query")
		for key, body := range answers {
			if strings.Contains(q, key) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(body))
				return
			}
		}
		w.WriteHeader(400)
		_, _ = w.Write([]byte(`{"status":"error","errorType":"bad_data","error":"unknown query"}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func vector(results ...string) string {
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(results, ",") + `]}}`
}

func TestPrometheusFetch(t *testing.T) {
	srv := fakePrometheus(t, map[string]string{
		MetricMisses: vector(
			`{"metric":{"mirror":"asia","repository":"app"},"value":[1700000000.1,"12.5"]}`,
			`{"metric":{"mirror":"asia","repository":"other"},"value":[1700000000.1,"3"]}`,
			`{"metric":{"mirror":"eu","repository":"app"},"value":[1700000000.1,"NaN"]}`),
		MetricRequests: vector(
			`{"metric":{"continent":"AS","mirror":"eu"},"value":[1700000000.1,"20"]}`,
			`{"metric":{"continent":"EU","mirror":"eu"},"value":[1700000000.1,"5"]}`),
		MetricDistance: vector(
			`{"metric":{"continent":"AS","le":"+Inf"},"value":[1,"20"]}`,
			`{"metric":{"continent":"AS","le":"100"},"value":[1,"0"]}`,
			`{"metric":{"continent":"AS","le":"12000"},"value":[1,"20"]}`,
			`{"metric":{"continent":"AS","le":"8000"},"value":[1,"15.2"]}`),
	})
	src, err := ParseSource("prometheus="+srv.URL+"/prom/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := src.String(); got != "prometheus="+srv.URL+"/prom" {
		t.Errorf("String() = %q", got)
	}
	d, err := src.Fetch(context.Background(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := Data{
		Misses:   []Miss{{Mirror: "asia", Repository: "app", Count: 12.5}, {Mirror: "asia", Repository: "other", Count: 3}, {Mirror: "eu", Repository: "app"}},
		Served:   []Served{{Continent: "AS", Mirror: "eu", Requests: 20}, {Continent: "EU", Mirror: "eu", Requests: 5}},
		Distance: []Histogram{{Continent: "AS", Bounds: []float64{100, 8000, 12000}, Buckets: []float64{0, 15.2, 20}, Count: 20}},
	}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}
}

func TestPrometheusErrors(t *testing.T) {
	for name, body := range map[string]string{
		"error status": `{"status":"error","error":"boom"}`,
		"matrix":       `{"status":"success","data":{"resultType":"matrix","result":[]}}`,
		"bad value":    vector(`{"metric":{"mirror":"a","repository":"b"},"value":[1,"lots"]}`),
		"infinite":     vector(`{"metric":{"mirror":"a","repository":"b"},"value":[1,"+Inf"]}`),
		"not json":     `<html>`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := fakePrometheus(t, map[string]string{MetricMisses: body})
			src, _ := ParseSource("prometheus="+srv.URL+"/prom", nil)
			if _, err := src.Fetch(context.Background(), time.Hour); err == nil {
				t.Error("Fetch accepted a bad answer")
			}
		})
	}
}

func TestParseSource(t *testing.T) {
	for in, want := range map[string]string{
		"prometheus=http://p:9090":      "prometheus=http://p:9090",
		"http://proxy:9090":             "http://proxy:9090/_/demand",
		"https://proxy/_/demand":        "https://proxy/_/demand",
		"prometheus=http://u:pw@p:9090": "prometheus=http://p:9090",
	} {
		s, err := ParseSource(in, nil)
		if err != nil || s.String() != want {
			t.Errorf("ParseSource(%q) = %v, %v; want %s", in, s, err, want)
		}
	}
	for _, bad := range []string{"", "prometheus=", "ftp://x", "prometheus=p:9090", "http://x/?q=1", "grafana=http://x"} {
		if _, err := ParseSource(bad, nil); err == nil {
			t.Errorf("ParseSource(%q) accepted", bad)
		}
	}
}

func TestWant(t *testing.T) {
	d := Data{Misses: []Miss{
		{Mirror: "asia", Repository: "app", Digest: "sha256:a", Count: 3},
		{Mirror: "asia", Repository: "app", Digest: "sha256:b", Count: 2},
		{Mirror: "asia", Repository: "tools", Count: 1},
		{Mirror: "asia", Repository: Other, Count: 50},
		{Mirror: "eu", Repository: "app", Count: 40}, // not a demand mirror
	}}
	got := Want(d, []string{"asia", "sa"}, []string{"app", "tools"}, 5)
	want := []Wanted{
		{Mirror: "asia", Copy: []RepoDemand{{"app", 5}}, Below: []RepoDemand{{"tools", 1}}},
		{Mirror: "sa", Copy: []RepoDemand{}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Want (-want +got):\n%s", diff)
	}
}
