package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// TestIndexPageInBrowser loads the index page of the built service in headless Chromium as
// visitors in several places: the proxy trusts the loopback address the browser connects from,
// and the browser sends an X-Forwarded-For of the visitor's address with every request (as a
// load balancer in front of the proxy would). It checks what a person sees (the visitor's mirror
// and its reason, the images with their pull commands, the mirror table), that a hostile header
// injects nothing, and that no visit reaches a mirror; a full-page screenshot of each visit is
// kept in the test's artifact directory (t.ArtifactDir: kept with go test -artifacts).
func TestIndexPageInBrowser(t *testing.T) {
	bin := needProxy(t)
	chrome := testenv.Need(t, "chromium", "apt-get install -y chromium")

	servers := map[string]*testenv.MirrorServer{}
	var b strings.Builder
	b.WriteString("name: images.example.dev\nupstream: http://127.0.0.2:5000/v2/acme/\n")
	b.WriteString("trusted_proxies: [\"127.0.0.1/32\"]\n")
	fmt.Fprintf(&b, "geoip:\n  database: %s\n  asn_database: %s\n", geoDatabase(t, "city.mmdb"), geoDatabase(t, "asn.mmdb"))
	b.WriteString("mirrors:\n")
	for _, m := range geoMirrors {
		servers[m.name] = testenv.StartMirrorServer(t, m.host)
		fmt.Fprintf(&b, "  - name: %s\n    provider: http\n    base_url: %s%s\n", m.name, servers[m.name].URL, m.path)
		fmt.Fprintf(&b, "    country: %s\n    location: {lat: %g, lon: %g}\n", m.country, m.lat, m.lon)
		if len(m.only) > 0 {
			fmt.Fprintf(&b, "    only_countries: [%s]\n", strings.Join(m.only, ", "))
		}
	}
	b.WriteString("sync:\n  repositories:\n    - {name: app, tags: [\"1.*\", \"1.0\"]}\n    - {name: tools/lint}\n")
	p := testenv.StartProxy(t, bin, b.String())

	// One browser for every visit. The parent context bounds the whole test; the browser lives
	// as long as it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chrome),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	wantCommands := []string{"docker pull images.example.dev/app:1.0", "docker pull images.example.dev/tools/lint"}
	for _, tc := range []struct {
		name, xff      string
		mirror, reason string
		location       string // a part of the location line
		rank           map[string]string
	}{
		{"GB", placeGB.addr, "eu-west", "continent", "country GB, continent EU", map[string]string{
			"eu-west": "1st, continent", "us-east": "2nd, distance", "br-south": "out of scope: only_countries [BR]",
		}},
		{"BR", placeBR.addr, "br-south", "country", "country BR, continent SA", map[string]string{
			"br-south": "1st, country", "us-east": "2nd, distance",
		}},
		// A malformed hop ends the walk through the forwarding header: the trusted proxy itself is
		// the client, which no database locates.
		{"hostile header", `"><script>alert(1)</script>`, "", "fallback:no-geo", "unknown", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := chromedp.Call(bctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
				Headers: network.Headers{"X-Forwarded-For": tc.xff},
			})
			if err != nil {
				t.Fatalf("set X-Forwarded-For: %v", err)
			}
			resp, err := chromedp.Run(bctx, chromedp.NavigateResponse(p.URL+"/"))
			if err != nil {
				t.Fatalf("load %s/: %v", p.URL, err)
			}
			if resp.Status != 200 || !strings.HasPrefix(resp.MimeType, "text/html") {
				t.Errorf("page answered %d %s", resp.Status, resp.MimeType)
			}
			shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatalf("screenshot: %v", err)
			}
			file := filepath.Join(t.ArtifactDir(), "index-"+strings.ReplaceAll(tc.name, " ", "-")+".png")
			if err := os.WriteFile(file, shot, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("screenshot of the page: %s", file)

			text := func(id string) string {
				t.Helper()
				s, err := chromedp.Run(bctx, chromedp.Text(chromedp.ID(id)))
				if err != nil {
					t.Fatalf("#%s: %v", id, err)
				}
				return s
			}
			if got := text("registry"); got != "images.example.dev" {
				t.Errorf("heading %q, want the registry's name", got)
			}
			if got := text("visitor-reason"); got != tc.reason {
				t.Errorf("reason %q, want %q", got, tc.reason)
			}
			if got := text("visitor-mirror"); tc.mirror != "" && !strings.HasPrefix(got, tc.mirror+", reason") {
				t.Errorf("mirror line %q, want %s first", got, tc.mirror)
			}
			if got := text("visitor-location"); !strings.Contains(got, tc.location) {
				t.Errorf("location %q, want %q in it", got, tc.location)
			}
			if tc.mirror != "" {
				chosen, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector("tr.chosen").dataset.mirror`))
				if err != nil || chosen != tc.mirror {
					t.Errorf("highlighted row %q (%v), want %s", chosen, err, tc.mirror)
				}
			}
			cmds, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("pre.cmd")).map(e => e.innerText.trim())`))
			if err != nil || !slices.Equal(cmds, wantCommands) {
				t.Errorf("pull commands %q (%v), want %q", cmds, err, wantCommands)
			}
			ranks, err := chromedp.Run(bctx, chromedp.Evaluate[map[string]string](
				`Object.fromEntries(Array.from(document.querySelectorAll("#mirrors tbody tr")).map(r => [r.dataset.mirror, r.querySelector("td.rank").innerText]))`))
			if err != nil || len(ranks) != len(geoMirrors) {
				t.Fatalf("mirror table %v (%v), want a row for each of %d mirrors", ranks, err, len(geoMirrors))
			}
			for m, want := range tc.rank {
				if !strings.HasPrefix(ranks[m], want) {
					t.Errorf("mirror %s ranks %q for the visitor, want %q", m, ranks[m], want)
				}
			}
			injected, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.scripts.length > 0 || document.body.innerText.includes("alert(")`))
			if err != nil || injected {
				t.Errorf("page holds a script or the header's text (%v)", err)
			}
		})
	}
	for name, s := range servers {
		if got := s.Since(0); len(got) != 0 {
			t.Errorf("mirror %s was asked %d times while the page was shown: %v", name, len(got), got)
		}
	}
}
