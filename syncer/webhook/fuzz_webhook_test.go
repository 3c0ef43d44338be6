package webhook

import (
	"encoding/base64"
	"testing"

	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// checkPushes holds for every parse that succeeds: each push names a valid client repository and
// a valid tag or digest, appears once, and routes back through the table to an upstream
// repository that the table maps to the same client name.
func checkPushes(t *testing.T, ups *upstream.Table, pushes []Push) {
	t.Helper()
	seen := map[Push]bool{}
	for _, p := range pushes {
		if seen[p] {
			t.Errorf("duplicate push %v", p)
		}
		seen[p] = true
		if err := oci.ValidateName(p.Repo); err != nil {
			t.Errorf("push %v: %v", p, err)
		}
		if again, err := oci.ParseReference(p.Ref.String()); err != nil || again != p.Ref {
			t.Errorf("push %v: reference does not round-trip: %v", p, err)
		}
		route, up := ups.Lookup(p.Repo)
		host, repo := route.Repository(up)
		if err := oci.ValidateName(repo); err != nil {
			t.Errorf("push %v: upstream repository %q: %v", p, repo, err)
		}
		if back, ok := ups.ClientName(host, repo); !ok || back != p.Repo {
			t.Errorf("push %v: upstream %s/%s maps back to %q, %v", p, host, repo, back, ok)
		}
	}
}

func FuzzParseRegistryEvents(f *testing.F) {
	const reg = "127.0.0.2:5000"
	for _, evs := range [][]event{
		{{"push", ociManifest, digestA, "acme/images/app", manifestURL(reg, "acme/images/app", digestA), "1.0"}},
		{
			{"push", layerType, digestB, "acme/images/app", "", ""},
			{"push", ociManifest, digestB, "acme/images/org/app", "", ""},
			{"push", ociIndex, digestA, "acme/images/org/app", manifestURL(reg, "acme/images/org/app", digestA), "latest"},
		},
		{{"push", dockerManifest, digestA, "acme/lint", manifestURL("ghcr.io", "acme/lint", "v1"), "v1"}},
		{{"pull", dockerList, digestA, "acme/images/app", "", "1"}, {"delete", "", digestA, "acme/images/app", "", ""}},
		{{"push", ociManifest, digestA, "proj/repo/img", manifestURL("us-east1-docker.pkg.dev", "proj/repo/img", "1"), ""}},
	} {
		f.Add(envelope(f, evs...))
	}
	for _, s := range []string{
		``, `{}`, `{"events":null}`, `{"events":[]}`, `{"events":[{}]}`,
		`{"events":[{"action":"push","target":{"mediaType":"` + ociManifest + `","repository":"acme/images/App","tag":"1"}}]}`,
		`{"events":[{"action":"push","target":{"mediaType":"` + ociManifest + `","repository":"acme/images/a","digest":"sha512:00"}}]}`,
		`{"events":[{"action":"push","target":{"mediaType":"` + ociManifest + `","repository":"acme/images/a","url":"http://[::1]:5000/v2/","tag":"x"}}]}`,
	} {
		f.Add([]byte(s))
	}
	ups := testTable(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		pushes, err := ParseRegistryEvents(body, ups)
		if err != nil {
			if pushes != nil {
				t.Errorf("pushes %v with error %v", pushes, err)
			}
			return
		}
		checkPushes(t, ups, pushes)
	})
}

// FuzzParsePubSub fuzzes the notification inside the message (the part a sender controls most
// precisely); the envelope's own JSON is covered by the seeds of raw bodies, which go in as they
// are when raw is true.
func FuzzParsePubSub(f *testing.F) {
	for _, data := range []string{
		`{"action":"INSERT","digest":"` + arImage + `@` + digestA + `","tag":"` + arImage + `:1.0"}`,
		`{"action":"INSERT","digest":"` + arImage + `@` + digestA + `"}`,
		`{"action":"INSERT","tag":"127.0.0.2:5000/acme/images/org/app:v2"}`,
		`{"action":"INSERT","tag":"ghcr.io/acme/lint:latest"}`,
		`{"action":"DELETE","tag":"` + arImage + `:1.0"}`,
		`{"action":"INSERT","tag":"localhost:5000/img"}`,
		`{"action":"INSERT","tag":"us-east1-docker.pkg.dev/proj/repo:1"}`,
		`{"action":"INSERT"}`,
		`not json`,
	} {
		f.Add(data, false)
	}
	for _, raw := range []string{
		`{"message":{"data":"` + base64.StdEncoding.EncodeToString([]byte(`{"action":"INSERT","tag":"`+arImage+`:1"}`)) + `"}}`,
		`{"message":{"data":"!!"}}`,
		`{"message":null}`,
		`{}`,
		``,
	} {
		f.Add(raw, true)
	}
	ups := testTable(f)
	f.Fuzz(func(t *testing.T, s string, raw bool) {
		body := []byte(s)
		if !raw {
			body = pubsubBody(t, s)
		}
		pushes, err := ParsePubSub(body, ups)
		if err != nil {
			if pushes != nil {
				t.Errorf("pushes %v with error %v", pushes, err)
			}
			return
		}
		if len(pushes) > 1 {
			t.Errorf("one message gave %d pushes", len(pushes))
		}
		checkPushes(t, ups, pushes)
	})
}
