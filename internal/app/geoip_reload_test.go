package app

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/happy-turtle/oci-proxy/config"
)

// TestReloadGeoIPDatabaseRewritten damages the running GeoIP database's file, in place (as
// `: > city.mmdb`, `cp` or `curl -o` do) and by rename, while blob requests are served. Requests
// keep their answers throughout, a reload of a damaged file is refused with the old database
// staying, and a good file put back is picked up.
func TestReloadGeoIPDatabaseRewritten(t *testing.T) {
	inPlace := func(t *testing.T, _ *reloadFixture, path string, data []byte) {
		t.Helper()
		// O_TRUNC on the existing file: same inode, new contents.
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	byRename := func(t *testing.T, f *reloadFixture, path string, data []byte) {
		t.Helper()
		f.replace(t, path, data)
	}
	for _, tc := range []struct {
		name string
		put  func(*testing.T, *reloadFixture, string, []byte)
	}{
		{"in place", inPlace},
		{"by rename", byRename},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newReloadFixture(t)
			f.write(t, true, `trusted_proxies: ["192.0.2.0/24"]`+"\n")
			cfg, err := config.Load(f.path, config.Overrides{})
			if err != nil {
				t.Fatal(err)
			}
			var logs syncBuilder
			svc, err := New(context.Background(), cfg, BuildInfo{}, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { svc.Close() }()
			svc.Watch(f.path, "", 0)

			good, err := os.ReadFile(f.db)
			if err != nil {
				t.Fatal(err)
			}
			// The same database, except that it places the German client in the US.
			moved := cityDatabase(t, map[string]cityRecord{
				"89.160.20.0/24":  {"US", "NA", 38.9, -77.4},
				"216.160.83.0/24": {"US", "NA", 47.61, -122.33},
			})
			const de, us = "89.160.20.112", "216.160.83.56"
			original := map[string]string{de: "eu-west country", us: "us-east country"}
			afterMove := map[string]string{de: "us-east country", us: "us-east country"}
			check := func(when string, want map[string]string) {
				t.Helper()
				for client, w := range want {
					if got := mirrorViaProxy(t, svc, client); got != w {
						t.Errorf("%s: client %s sent to %q, want %q", when, client, got, w)
					}
				}
			}
			check("at start", original)

			broken := []struct {
				name string
				data []byte
			}{
				{"emptied", nil},
				{"half written", good[:len(good)/2]},
				{"zeroed", make([]byte, len(good))},
				{"not a database", []byte("<html>404 Not Found</html>\n")},
			}
			refuse := func(want map[string]string) {
				t.Helper()
				for _, b := range broken {
					running := svc.cur.Load()
					tc.put(t, f, f.db, b.data)
					check(b.name+", before the reload", want)
					err := svc.Reload(t.Context())
					if err == nil || !strings.Contains(err.Error(), f.db) {
						t.Errorf("%s: Reload = %v, want an error naming %s", b.name, err, f.db)
					}
					if svc.cur.Load() != running {
						t.Errorf("%s: the refused reload replaced the running configuration", b.name)
					}
					check(b.name+", after the refused reload", want)
				}
			}
			accept := func(name string, data []byte, want map[string]string) {
				t.Helper()
				running := svc.cur.Load()
				tc.put(t, f, f.db, data)
				if err := svc.Reload(t.Context()); err != nil {
					t.Fatalf("%s: Reload: %v", name, err)
				}
				if svc.cur.Load() == running {
					t.Errorf("%s: Reload kept the old configuration", name)
				}
				check(name+", after the reload", want)
			}

			refuse(original)
			accept("good file back", good, original)
			accept("another good file", moved, afterMove)
			refuse(afterMove)
			accept("first file back", good, original)
			if n := strings.Count(logs.String(), "configuration refused"); n != 2*len(broken) {
				t.Errorf("%d refusals logged, want %d:\n%s", n, 2*len(broken), logs.String())
			}
		})
	}
}

// mirrorViaProxy asks for a blob as client through the trusted proxy 192.0.2.1, and returns the
// mirror chosen and why.
func mirrorViaProxy(t *testing.T, svc *Service, client string) string {
	t.Helper()
	req := httptest.NewRequest("GET", "/v2/app/blobs/"+blobA, nil)
	req.RemoteAddr = "192.0.2.1:5000"
	req.Header.Set("X-Forwarded-For", client)
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, req)
	if rec.Code != 307 {
		t.Errorf("client %s: status %d, want 307", client, rec.Code)
	}
	return rec.Header().Get("X-Mirror") + " " + rec.Header().Get("X-Mirror-Reason")
}

type cityRecord struct {
	country, continent string
	lat, lon           float64
}

// cityDatabase writes a City database holding the given networks.
func cityDatabase(t *testing.T, records map[string]cityRecord) []byte {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoIP2-City", RecordSize: 24})
	if err != nil {
		t.Fatal(err)
	}
	for network, r := range records {
		_, n, err := net.ParseCIDR(network)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(n, mmdbtype.Map{
			"continent": mmdbtype.Map{"code": mmdbtype.String(r.continent)},
			"country":   mmdbtype.Map{"iso_code": mmdbtype.String(r.country)},
			"location":  mmdbtype.Map{"latitude": mmdbtype.Float64(r.lat), "longitude": mmdbtype.Float64(r.lon)},
		}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
