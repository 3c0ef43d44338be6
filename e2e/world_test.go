package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/syncer"
)

// The images of the world: different sizes, so that bytes and requests tell different stories.
var worldImages = []worldImageSpec{
	{repo: "app", layers: 4, size: 128 << 10},
	{repo: "base", layers: 2, size: 512 << 10},
	{repo: "tools", layers: 1, size: 16 << 10},
}

// worldSchedule is one round of pulls: which place pulls which image how often. Every place
// pulls its entries one after the other; the places pull at the same time.
var worldSchedule = []struct {
	place, repo string
	times       int
}{
	{"DE", "app", 2}, {"DE", "base", 1},
	{"US", "app", 2}, {"US", "base", 1}, {"US", "tools", 1},
	{"JP", "app", 1}, {"JP", "tools", 1},
	{"SG", "app", 1},
	{"BR", "app", 2}, {"BR", "base", 2},
	{"AU", "app", 1}, {"AU", "base", 2},
	// Johannesburg pulls tools once a round: fewer misses than --demand-min, so it is not
	// copied to af-south and stays served from afar, a small share of the bytes.
	{"ZA", "app", 2}, {"ZA", "base", 2}, {"ZA", "tools", 1},
}

// worldDemandMin is the --demand-min of the demand round: below what two rounds of the
// schedule make of every pull but Johannesburg's tools (4 misses), with room for the decay of
// /_/demand's counts.
const worldDemandMin = 8

// worldSkipDemandEnv, set to 1, skips the demand round: the test must then fail its goal,
// which shows that it measures something.
const worldSkipDemandEnv = "OCI_PROXY_WORLD_SKIP_DEMAND"

// TestWorld builds a small world (clients on six continents, six mirrors in versitygw and
// fake-gcs-server on five, three of them `sync: demand`, a registry with three images, two
// replicas of the proxy behind each place's load balancer) and measures where the bytes of
// the clients' pulls come from: the share served by the nearest mirror holding the blob, by
// other mirrors and by the upstream, and the share served by the client's nearest mirror of
// all. It does so before any sync, after a plain `oci-proxy
// sync` (the demand mirrors stay empty) and after a `sync --demand` round that reads the
// replicas' /_/demand. The goal: once demand sync has run, at least 99% of the bytes from the
// nearest holding mirror and from the client's nearest mirror, none from the upstream.
func TestWorld(t *testing.T) {
	start := time.Now()
	w := startWorld(t, worldImages)

	before := w.round(t, "before any sync")
	if before.upstream != before.total {
		t.Errorf("before any sync: upstream served %d of %d bytes, want all", before.upstream, before.total)
	}

	rep, out, err := runSync(t, w.config)
	if err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	w.checkPlainSync(t, rep)
	time.Sleep(1500 * time.Millisecond) // presence.miss_ttl: the misses of the last round expire
	synced := w.round(t, "after sync")
	if synced.upstream != 0 {
		t.Errorf("after sync: upstream served %d bytes, want none (every blob is in the sync: all mirrors)", synced.upstream)
	}
	if err := synced.goal(); err == nil {
		t.Errorf("after sync, before the demand round, the goal is met already: the world measures nothing")
	} else {
		t.Logf("world: after sync the goal is not met, as expected: %v", err)
	}

	last := "after sync --demand"
	if os.Getenv(worldSkipDemandEnv) == "1" {
		last = "after no demand round (" + worldSkipDemandEnv + "=1)"
	} else {
		w.demandRound(t)
		time.Sleep(1500 * time.Millisecond)
	}
	final := w.round(t, last)
	if err := final.goal(); err != nil {
		t.Errorf("%s: %v", last, err)
	}
	t.Logf("TestWorld took %s", time.Since(start).Round(time.Millisecond))
}

// checkPlainSync checks that plain sync filled every `sync: all` mirror and left the demand
// mirrors alone.
func (w *world) checkPlainSync(t *testing.T, rep syncer.Report) {
	t.Helper()
	blobs := 0
	for _, im := range w.images {
		blobs += len(im.blobs)
	}
	byName := map[string]syncer.TargetReport{}
	for _, tr := range rep.Targets {
		byName[tr.Name] = tr
	}
	for _, m := range worldMirrors {
		tr, ok := byName[m.name]
		switch {
		case !ok:
			t.Errorf("sync: mirror %s not in the report", m.name)
		case m.demand && (tr.Skipped == "" || tr.Copied != 0):
			t.Errorf("sync: demand mirror %s: %+v; want skipped", m.name, tr)
		case !m.demand && (tr.Copied+tr.Present != blobs || len(tr.Failed) != 0):
			t.Errorf("sync: mirror %s: %+v; want all %d blobs", m.name, tr, blobs)
		}
	}
}

// worldDemand is the part of a `sync --demand --json` report the test reads (docs/SYNC.md).
type worldDemand struct {
	Error   string `json:"error"`
	Mirrors []struct {
		Mirror string           `json:"mirror"`
		Copy   []worldRepoCount `json:"copy"`
		Below  []worldRepoCount `json:"below"`
		Sync   *syncer.Report   `json:"sync"`
	} `json:"mirrors"`
}

type worldRepoCount struct {
	Repository string  `json:"repository"`
	Misses     float64 `json:"misses"`
}

// expectedMisses is, per demand mirror and repository, the blob requests of the schedule for
// which that mirror ranked first and lacked the blob: every request of the places it is
// nearest to, in each of the rounds before the demand round.
func (w *world) expectedMisses(rounds int) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, m := range worldMirrors {
		if m.demand {
			out[m.name] = map[string]float64{}
		}
	}
	for _, e := range worldSchedule {
		home := placeNamed(e.place).home()
		if out[home] != nil {
			out[home][e.repo] += float64(rounds * e.times * len(w.images[e.repo].blobs))
		}
	}
	return out
}

// replicaMisses reads each replica's /_/demand: its misses by demand mirror and repository.
func (w *world) replicaMisses(t *testing.T) []map[[2]string]float64 {
	t.Helper()
	var out []map[[2]string]float64
	for _, admin := range w.admins {
		a := do(t, http.MethodGet, admin+"/_/demand", nil)
		var snap struct {
			Misses []struct {
				Mirror     string  `json:"mirror"`
				Repository string  `json:"repository"`
				Count      float64 `json:"count"`
			} `json:"misses"`
		}
		if a.Status != http.StatusOK {
			t.Fatalf("%s/_/demand: status %d: %s", admin, a.Status, a.Body)
		}
		if err := json.Unmarshal(a.Body, &snap); err != nil {
			t.Fatalf("%s/_/demand: %v: %s", admin, err, a.Body)
		}
		m := map[[2]string]float64{}
		for _, e := range snap.Misses {
			m[[2]string{e.Mirror, e.Repository}] += e.Count
		}
		out = append(out, m)
	}
	return out
}

// demandRound runs `oci-proxy sync --demand` with every replica's /_/demand and checks that it
// copied, into each demand mirror, exactly the repositories the schedule made reach
// --demand-min there, and that some of them reached it only in the sum of the replicas.
func (w *world) demandRound(t *testing.T) {
	t.Helper()
	perReplica := w.replicaMisses(t)
	args := []string{"sync", "--config", w.config, "--json", "--demand-min", fmt.Sprint(worldDemandMin)}
	for _, admin := range w.admins {
		args = append(args, "--demand", admin+"/_/demand")
	}
	out, err := testenv.RunErr(time.Minute, nil, needProxy(t), args...)
	if err != nil {
		t.Fatalf("oci-proxy %v: %v\n%s", args, err, out)
	}
	var rep worldDemand
	found := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &rep); err != nil {
				t.Fatalf("sync --demand report is not JSON: %v\n%s", err, out)
			}
			found = true
			break
		}
	}
	if !found || rep.Error != "" {
		t.Fatalf("sync --demand: no report or an error (%q):\n%s", rep.Error, out)
	}
	want := w.expectedMisses(2)
	var onlySummed []string // copied, though no replica alone reached the minimum
	for _, m := range rep.Mirrors {
		exp, ok := want[m.Mirror]
		if !ok {
			t.Errorf("sync --demand: mirror %s is not a demand mirror", m.Mirror)
			continue
		}
		var copied []string
		for _, c := range m.Copy {
			copied = append(copied, c.Repository)
		}
		var wantCopied []string
		for repo, n := range exp {
			if n >= worldDemandMin {
				wantCopied = append(wantCopied, repo)
			}
		}
		slices.Sort(copied)
		slices.Sort(wantCopied)
		if !slices.Equal(copied, wantCopied) {
			t.Errorf("sync --demand: mirror %s copied %v, want %v (expected misses %v)", m.Mirror, copied, wantCopied, exp)
		}
		// /_/demand's counts decay (a half-life of an hour): a little less than counted.
		for _, c := range slices.Concat(m.Copy, m.Below) {
			if n := exp[c.Repository]; c.Misses > n+0.01 || c.Misses < 0.95*n {
				t.Errorf("sync --demand: mirror %s: %s missed %.2f times, want about %g", m.Mirror, c.Repository, c.Misses, n)
			}
		}
		for _, c := range m.Copy {
			alone := false
			for _, r := range perReplica {
				alone = alone || r[[2]string{m.Mirror, c.Repository}] >= worldDemandMin
			}
			if !alone {
				onlySummed = append(onlySummed, m.Mirror+" "+c.Repository)
			}
		}
		if m.Sync != nil && m.Sync.Failures() != 0 {
			t.Errorf("sync --demand: mirror %s: copy failed: %+v", m.Mirror, m.Sync)
		}
		delete(want, m.Mirror)
	}
	if len(want) > 0 {
		t.Errorf("sync --demand: no report for mirrors %v", slices.Sorted(maps.Keys(want)))
	}
	// The balancers spread each place's requests over the replicas, so a repository that
	// only just reaches the minimum (Sydney's app: 10 misses) reaches it in no replica alone.
	if len(onlySummed) == 0 {
		t.Errorf("sync --demand: every copy reached the minimum in one replica alone (%v): the sum of the replicas is untested", perReplica)
	}
	t.Logf("world: sync --demand copied (summed over %d replicas; reached only in the sum: %s):\n%s",
		len(w.admins), strings.Join(onlySummed, ", "), demandSummary(rep))
}

func demandSummary(rep worldDemand) string {
	var b strings.Builder
	for _, m := range rep.Mirrors {
		fmt.Fprintf(&b, "  %s:", m.Mirror)
		for _, c := range m.Copy {
			fmt.Fprintf(&b, " %s (%.1f misses)", c.Repository, c.Misses)
		}
		for _, c := range m.Below {
			fmt.Fprintf(&b, "; below the minimum: %s (%.1f misses)", c.Repository, c.Misses)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func placeNamed(name string) worldPlace {
	for _, p := range worldPlaces {
		if p.name == name {
			return p
		}
	}
	panic("no place " + name)
}

// worldShares is where one round's blob bytes came from.
type worldShares struct {
	round          string
	requests       int
	total          int64
	nearestHolding int64 // from the nearest mirror that held the blob during the round
	other          int64 // from another mirror
	upstream       int64
	home           int64                       // from the client's nearest mirror of all
	byPlace        map[string]map[string]int64 // place -> mirror (or upstream) -> bytes
}

// goal is the world's goal: at least 99% of the bytes from the nearest holding mirror and from
// the client's nearest mirror, nothing from the upstream.
func (s worldShares) goal() error {
	var errs []string
	if s.upstream != 0 {
		errs = append(errs, fmt.Sprintf("upstream served %s, want 0%%", pct(s.upstream, s.total)))
	}
	if s.nearestHolding*100 < s.total*99 {
		errs = append(errs, fmt.Sprintf("nearest holding mirror served %s, want at least 99%%", pct(s.nearestHolding, s.total)))
	}
	if s.home*100 < s.total*99 {
		errs = append(errs, fmt.Sprintf("the clients' nearest mirrors served %s, want at least 99%%", pct(s.home, s.total)))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func pct(n, total int64) string {
	if total == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(total))
}

// round runs the schedule once, every place at the same time, and accounts for the blob bytes
// the counting fronts passed meanwhile. The buckets do not change during a round, so the
// holdings listed before it say which mirror was the nearest to hold each blob.
func (w *world) round(t *testing.T, name string) worldShares {
	t.Helper()
	held := w.holdings(t)
	mark := w.counter.mark()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	var wantBytes int64
	wantRequests := 0
	for _, p := range worldPlaces {
		var todo []string
		for _, e := range worldSchedule {
			if e.place == p.name {
				for range e.times {
					todo = append(todo, e.repo)
					wantBytes += w.images[e.repo].bytes()
					wantRequests += len(w.images[e.repo].blobs)
				}
			}
		}
		wg.Go(func() {
			for _, repo := range todo {
				if err := w.pull(ctx, p.name, repo); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("round %q: %v", name, err)
	}
	s, strangers := account(name, w.counter.since(mark), held)
	for _, f := range strangers {
		t.Errorf("round %q: %d bytes of %s from %s to someone not a client", name, f.bytes, f.digest, f.from)
	}
	// Every blob of every pull fetched once, in full, and counted: the fronts miss nothing.
	if s.requests != wantRequests || s.total != wantBytes {
		t.Errorf("round %q: counted %d blob fetches, %d bytes; the schedule fetches %d, %d bytes", name, s.requests, s.total, wantRequests, wantBytes)
	}
	t.Logf("world: %s", s)
	return s
}

// account sorts a round's fetches by where they came from, given what each mirror held
// (mirror -> digests); fetches by anyone but a client are returned apart.
func account(name string, fetches []blobFetch, held map[string]map[string]bool) (s worldShares, strangers []blobFetch) {
	s = worldShares{round: name, byPlace: map[string]map[string]int64{}}
	for _, f := range fetches {
		if f.client == "" {
			strangers = append(strangers, f)
			continue
		}
		p := placeNamed(f.client)
		var holders []string
		for m, ds := range held {
			if ds[f.digest] {
				holders = append(holders, m)
			}
		}
		s.requests++
		s.total += f.bytes
		switch f.from {
		case upstreamMirror:
			s.upstream += f.bytes
		case p.nearest(holders):
			s.nearestHolding += f.bytes
		default:
			s.other += f.bytes
		}
		if f.from == p.home() {
			s.home += f.bytes
		}
		if s.byPlace[p.name] == nil {
			s.byPlace[p.name] = map[string]int64{}
		}
		s.byPlace[p.name][f.from] += f.bytes
	}
	return s, strangers
}

// TestWorldAccounting checks TestWorld's bookkeeping without any server: each share can be
// missed, and the goal fails for each way of missing it.
func TestWorldAccounting(t *testing.T) {
	const d1, d2 = "sha256:01", "sha256:02"
	// d1 is in us-east and sa-east, d2 in us-east only.
	held := map[string]map[string]bool{"us-east": {d1: true, d2: true}, "sa-east": {d1: true}}
	for _, tt := range []struct {
		name    string
		fetches []blobFetch
		want    [4]int64 // nearest holding, other, upstream, home
		goal    bool
	}{
		{"from the nearest holder, which is home", []blobFetch{{from: "sa-east", client: "BR", digest: d1, bytes: 100}},
			[4]int64{100, 0, 0, 100}, true},
		{"past a nearer holder", []blobFetch{{from: "us-east", client: "BR", digest: d1, bytes: 100}},
			[4]int64{0, 100, 0, 0}, false},
		{"from the nearest holder, far from home", []blobFetch{{from: "us-east", client: "BR", digest: d2, bytes: 100}},
			[4]int64{100, 0, 0, 0}, false},
		{"from the upstream", []blobFetch{{from: upstreamMirror, client: "US", digest: d2, bytes: 100}},
			[4]int64{0, 0, 100, 0}, false},
		{"1% from afar", []blobFetch{
			{from: "sa-east", client: "BR", digest: d1, bytes: 99},
			{from: "us-east", client: "BR", digest: d2, bytes: 1}},
			[4]int64{100, 0, 0, 99}, true},
		{"a little more than 1% from afar", []blobFetch{
			{from: "sa-east", client: "BR", digest: d1, bytes: 98},
			{from: "us-east", client: "BR", digest: d2, bytes: 2}},
			[4]int64{100, 0, 0, 98}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, strangers := account(tt.name, append(tt.fetches, blobFetch{from: "us-east", digest: d1, bytes: 7}), held)
			if len(strangers) != 1 {
				t.Errorf("strangers %v, want the one fetch without a client", strangers)
			}
			if got := [4]int64{s.nearestHolding, s.other, s.upstream, s.home}; got != tt.want {
				t.Errorf("nearest holding, other, upstream, home = %v, want %v", got, tt.want)
			}
			if err := s.goal(); (err == nil) != tt.goal {
				t.Errorf("goal: %v, want met %v", err, tt.goal)
			}
		})
	}
}

// String is the round's report: the shares, then each place's bytes by the mirror that served
// them.
func (s worldShares) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "round %q: %d blob fetches, %.1f MiB: nearest holding mirror %s, other mirrors %s, upstream %s; the clients' nearest mirrors %s\n",
		s.round, s.requests, float64(s.total)/(1<<20), pct(s.nearestHolding, s.total), pct(s.other, s.total), pct(s.upstream, s.total), pct(s.home, s.total))
	for _, p := range worldPlaces {
		from := s.byPlace[p.name]
		var total int64
		for _, n := range from {
			total += n
		}
		fmt.Fprintf(&b, "  %s (%s, nearest %s) %.2f MiB:", p.name, p.continent, p.home(), float64(total)/(1<<20))
		for _, m := range slices.Sorted(maps.Keys(from)) {
			fmt.Fprintf(&b, " %s %s", m, pct(from[m], total))
		}
		b.WriteString("\n")
	}
	return b.String()
}
