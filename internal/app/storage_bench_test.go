package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/internal/testenv"
)

// storageFake answers what the S3 and GCS clients ask during a presence check: a HEAD on the
// S3 object, and the GCS JSON API's object metadata. Signing is local, so nothing else is needed
// for a redirect.
func storageFake(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/storage/v1/b/") {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"kind":"storage#object","name":"x","bucket":"eu","size":"3"}`)
			return
		}
		w.Header().Set("Content-Length", "3")
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// BenchmarkBlobRedirectWarmStorage is a full blob redirect to an S3 and to a GCS mirror with
// presence and signed URL cached: what a hot layer costs.
func BenchmarkBlobRedirectWarmStorage(b *testing.B) {
	srv := storageFake(b)
	keyFile, _ := testenv.ServiceAccountKey(b)
	b.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	b.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	b.Setenv("AWS_CA_BUNDLE", "")
	b.Setenv("STORAGE_EMULATOR_HOST", strings.TrimPrefix(srv.URL, "http://"))
	yaml := fmt.Sprintf(`
upstream: http://127.0.0.2:5000/v2/acme/
trusted_proxies: ["192.0.2.0/24"]
geoip: {database: %[1]s/city.mmdb}
mirrors:
  - name: us-east
    provider: s3
    bucket: us
    region: us-east-1
    endpoint: %[2]s
    country: US
  - name: eu-west
    provider: gcs
    bucket: eu
    credentials_file: %[3]s
    country: DE
`, geoDir(b), srv.URL, keyFile)
	p := filepath.Join(b.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(p, config.Overrides{})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := New(context.Background(), cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	for _, bc := range []struct{ name, xff string }{{"s3", "216.160.83.56"}, {"gcs", "89.160.20.112"}} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/v2/app/blobs/"+blobA, nil)
			req.RemoteAddr = "192.0.2.1:5000"
			req.Header.Set("X-Forwarded-For", bc.xff)
			w := &nullWriter{h: http.Header{}}
			svc.Handler().ServeHTTP(w, req)
			if w.h.Get("X-Mirror") == "upstream" || !strings.Contains(w.h.Get("Location"), "Signature=") {
				b.Fatalf("warm-up: X-Mirror %q (%s), Location %q", w.h.Get("X-Mirror"), w.h.Get("X-Mirror-Reason"), w.h.Get("Location"))
			}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				svc.Handler().ServeHTTP(w, req)
			}
		})
	}
}
