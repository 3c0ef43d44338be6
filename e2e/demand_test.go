package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// prometheusInstall says how to get the Prometheus server the demand test scrapes with.
const prometheusInstall = "apt-get install -y prometheus"

// startPrometheus starts a Prometheus server that scrapes targets (host:port, /metrics) every
// second and returns the base URL of its query API.
func startPrometheus(t *testing.T, targets ...string) string {
	t.Helper()
	bin := testenv.Need(t, "prometheus", prometheusInstall)
	dir := t.TempDir()
	var quoted []string
	for _, tg := range targets {
		quoted = append(quoted, strconv.Quote(tg))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: oci-proxy
    static_configs:
      - targets: [%s]
`, strings.Join(quoted, ", "))
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.Addr(t, "127.0.0.1")
	proc := testenv.Start(t, "prometheus", nil, bin, "--config.file="+path, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+addr, "--log.level=warn")
	base := "http://" + addr
	testenv.WaitReady(t, proc, base+"/-/ready")
	return base
}

// promQuery runs an instant query and returns its samples as label sets with values.
func promQuery(t *testing.T, base, q string) []struct {
	Metric map[string]string
	Value  float64
} {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?" + url.Values{"query": {q}}.Encode())
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	defer resp.Body.Close()
	var a struct {
		Status string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  []any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || a.Status != "success" {
		t.Fatalf("query %s: status %q, %v", q, a.Status, err)
	}
	var out []struct {
		Metric map[string]string
		Value  float64
	}
	for _, r := range a.Data.Result {
		s, _ := r.Value[1].(string)
		v, _ := strconv.ParseFloat(s, 64)
		out = append(out, struct {
			Metric map[string]string
			Value  float64
		}{r.Metric, v})
	}
	return out
}

// waitProm polls q until ok accepts its answer, for up to 30 s: the first scrape comes a few
// seconds after Prometheus is ready.
func waitProm(t *testing.T, base, q string, ok func(vals []float64) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var vals []float64
		for _, s := range promQuery(t, base, q) {
			vals = append(vals, s.Value)
		}
		if ok(vals) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus: %s = %v after 30s", q, vals)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// demandReport is what `oci-proxy sync --demand --json` prints, in the fields this test reads.
type demandReport struct {
	Error   string
	Mirrors []struct {
		Mirror string
		Copy   []struct {
			Repository string
			Misses     float64
		}
		Sync *struct {
			Targets []struct {
				Name   string
				Copied int
				Failed []any
			}
		}
	}
}

// TestDemandMirroring: a `sync: demand` mirror in Germany starts empty while plain sync fills the
// US one. Clients in Germany pull app through two proxy replicas (behind trusted fronts) and are
// sent to the US; Prometheus scrapes both replicas; `sync --demand prometheus=URL` copies exactly
// app (not tools, which nobody near it pulled, nor an unconfigured repository) into the German
// mirror; the next pull is served by it; `oci-proxy demand` names the mirror and repository. No
// label of either replica, or in Prometheus, is a digest, an address or an unconfigured
// repository.
func TestDemandMirroring(t *testing.T) {
	start := time.Now()
	s := startStorage(t)
	bin := needProxy(t)
	app := s.reg.PushOCIImage(t, upstreamPrefix+"/app:1.0")
	tools := s.reg.PushOCIImage(t, upstreamPrefix+"/tools:1.0")
	secret := s.reg.PushOCIImage(t, upstreamPrefix+"/secret-project:1.0") // not in sync.repositories

	// Two replicas behind two fronts in Germany; each front is a trusted proxy of both.
	de2 := place{name: "DE2", front: "127.0.0.14", client: fromDE.client, mirror: gcsMirror}
	yaml := s.storageConfig(s.direct(), []place{fromDE, de2}, configOptions{
		presence: "  miss_ttl: 1s\n", // so that a blob copied by sync is used at once
		sync:     "  repositories:\n    - name: app\n    - name: tools\n",
	})
	yaml = strings.Replace(yaml, "    location: {lat: 50.1, lon: 8.7}\n", "    location: {lat: 50.1, lon: 8.7}\n    sync: demand\n", 1)
	yaml = "admin: {enabled: true}\n" + yaml
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("STORAGE_EMULATOR_HOST", s.gcs.Host)

	// Plain sync fills the US mirror and leaves the demand mirror alone.
	rep, out, err := runSync(t, cfgPath)
	if err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	for _, tr := range rep.Targets {
		if tr.Name == gcsMirror && (tr.Copied != 0 || !strings.Contains(tr.Skipped, "demand")) {
			t.Errorf("plain sync wrote the demand mirror: %+v", tr)
		}
	}
	for _, d := range slices.Concat(app.Blobs(), tools.Blobs()) {
		if _, ok := s.gcsObject(t, blobKey(d)); ok {
			t.Fatalf("blob %s is in the demand mirror after plain sync", d)
		}
		if _, ok := s.s3Object(t, blobKey(d)); !ok {
			t.Fatalf("blob %s is not in the US mirror after plain sync", d)
		}
	}

	replicas := []*testenv.Proxy{testenv.StartProxy(t, bin, yaml), testenv.StartProxy(t, bin, yaml)}
	fronts := []*testenv.Front{
		testenv.StartFront(t, fromDE.front, fromDE.client, replicas[0].URL),
		testenv.StartFront(t, de2.front, de2.client, replicas[1].URL),
	}
	prom := startPrometheus(t, replicas[0].Addr, replicas[1].Addr)
	// increase() counts from the first sample: the zeros must be scraped before the pulls.
	appMisses := fmt.Sprintf(`sum by (instance) (oci_proxy_demand_misses_total{mirror=%q,repository="app"})`, gcsMirror)
	waitProm(t, prom, appMisses, func(v []float64) bool { return len(v) == 2 && v[0] == 0 && v[1] == 0 })

	// Before: German clients are sent to the US for app's blobs.
	checkMirror(t, blobRedirect(t, http.MethodGet, fronts[0].URL+"/v2/app/blobs/"+app.Layers[0]), s3Mirror, "distance")
	skopeo := testenv.NewSkopeo(t)
	for _, f := range fronts {
		if got := skopeo.Copy(t, f.Ref("app:1.0")); got.Digest != app.Digest {
			t.Fatalf("pull through %s: digest %s, want %s", f.Addr, got.Digest, app.Digest)
		}
	}
	if got := skopeo.Copy(t, fronts[1].Ref("secret-project:1.0")); got.Digest != secret.Digest {
		t.Fatalf("pull of secret-project: digest %s", got.Digest)
	}
	waitProm(t, prom, appMisses, func(v []float64) bool {
		return len(v) == 2 && v[0] >= float64(len(app.Blobs())) && v[1] >= float64(len(app.Blobs()))
	})
	waitProm(t, prom, fmt.Sprintf(`sum(oci_proxy_demand_misses_total{mirror=%q,repository="other"})`, gcsMirror), func(v []float64) bool {
		return len(v) == 1 && v[0] >= float64(len(secret.Blobs()))
	})

	// sync --demand copies app, and only app, into the German mirror.
	out, err = testenv.RunErr(2*time.Minute, nil, bin, "sync", "--config", cfgPath, "--json", "--quiet",
		"--demand", "prometheus="+prom, "--demand-min", "1", "--demand-window", "10m")
	if err != nil {
		t.Fatalf("sync --demand: %v\n%s", err, out)
	}
	var drep demandReport
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &drep); err != nil {
				t.Fatalf("report: %v\n%s", err, line)
			}
		}
	}
	if drep.Error != "" || len(drep.Mirrors) != 1 || drep.Mirrors[0].Mirror != gcsMirror ||
		len(drep.Mirrors[0].Copy) != 1 || drep.Mirrors[0].Copy[0].Repository != "app" || drep.Mirrors[0].Sync == nil {
		t.Fatalf("sync --demand report:\n%s", out)
	}
	if tg := drep.Mirrors[0].Sync.Targets; len(tg) != 1 || tg[0].Name != gcsMirror || tg[0].Copied != len(app.Blobs()) || len(tg[0].Failed) != 0 {
		t.Errorf("copy into %s: %+v; want %d blobs copied", gcsMirror, tg, len(app.Blobs()))
	}
	for _, d := range app.Blobs() {
		if b, ok := s.gcsObject(t, blobKey(d)); !ok || testenv.SHA256Digest(b) != d {
			t.Errorf("app blob %s not in %s after sync --demand", d, gcsMirror)
		}
	}
	for _, d := range slices.Concat(tools.Blobs(), secret.Blobs()) {
		if _, ok := s.gcsObject(t, blobKey(d)); ok {
			t.Errorf("blob %s (not missed by app's clients) was copied into %s", d, gcsMirror)
		}
	}

	// After: the next pull from Germany is served by the German mirror, through both replicas.
	time.Sleep(1100 * time.Millisecond) // the proxies' remembered misses (miss_ttl 1s) expire
	for _, f := range fronts {
		checkMirror(t, blobRedirect(t, http.MethodGet, f.URL+"/v2/app/blobs/"+app.Layers[0]), gcsMirror, "country")
	}
	m := s.mark()
	if got := skopeo.Copy(t, fronts[1].Ref("app:1.0")); got.Digest != app.Digest {
		t.Fatalf("pull after sync --demand: digest %s", got.Digest)
	}
	s.waitServed(t, m, gcsMirror, app.Blobs())

	// The operator's view names the mirror and the repository its clients missed.
	view := testenv.Run(t, time.Minute, nil, bin, "demand", "--config", cfgPath, "--from", "prometheus="+prom, "--window", "10m")
	t.Logf("oci-proxy demand:\n%s", view)
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(gcsMirror) + ` \(EU, sync: demand\) .*app \d`).MatchString(view) {
		t.Errorf("demand report does not name %s and app:\n%s", gcsMirror, view)
	}
	jsonView := testenv.Run(t, time.Minute, nil, bin, "demand", "--config", cfgPath, "--from", "prometheus="+prom, "--window", "10m", "--json")
	var a struct {
		Mirrors []struct {
			Mirror       string
			Missed       float64
			Repositories []struct{ Repository string }
		}
		Continents []struct {
			Continent string
			Requests  float64
		}
	}
	if err := json.Unmarshal([]byte(jsonView), &a); err != nil {
		t.Fatalf("demand --json: %v\n%s", err, jsonView)
	}
	found := false
	for _, m := range a.Mirrors {
		if m.Mirror == gcsMirror && m.Missed > 0 && len(m.Repositories) > 0 && m.Repositories[0].Repository == "app" {
			found = true
		}
	}
	if !found || len(a.Continents) == 0 || a.Continents[0].Continent != "EU" {
		t.Errorf("demand --json:\n%s", jsonView)
	}
	// /_/demand of a replica lists the missed digests (the admin view, not a label).
	resp, err := http.Get(replicas[0].URL + "/_/demand")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), app.Layers[0]) || !strings.Contains(string(body), `"repository":"app"`) {
		t.Errorf("/_/demand lacks app's missed layer:\n%s", body)
	}

	// No digest, address or unconfigured repository as a label: in either replica's metrics,
	// and in what Prometheus stored.
	for _, r := range replicas {
		resp, err := http.Get(r.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		testenv.CheckMetricLabels(t, string(text), []string{"app", "tools", "other"}, []string{fromDE.client, "secret-project", strings.TrimPrefix(app.Layers[0], "sha256:")})
	}
	for _, l := range []string{"repository", "mirror", "continent"} {
		resp, err := http.Get(prom + "/api/v1/label/" + l + "/values")
		if err != nil {
			t.Fatal(err)
		}
		var vals struct {
			Status string
			Data   []string
		}
		err = json.NewDecoder(resp.Body).Decode(&vals)
		resp.Body.Close()
		if err != nil || vals.Status != "success" || len(vals.Data) == 0 {
			t.Fatalf("Prometheus label %s values: status %q, %v, values %q", l, vals.Status, err, vals.Data)
		}
		if l == "repository" && !slices.Contains(vals.Data, "app") {
			t.Errorf("Prometheus repository values %q lack app", vals.Data)
		}
		for _, v := range vals.Data {
			if testenv.LooksLikeDigestOrAddress(v) || (l == "repository" && !slices.Contains([]string{"app", "tools", "other"}, v)) {
				t.Errorf("Prometheus holds label %s=%q", l, v)
			}
		}
	}
	t.Logf("demand mirroring end to end in %v", time.Since(start).Round(time.Millisecond))
}
