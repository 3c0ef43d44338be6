package auth

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type basicAnswer struct {
	User, Password string
	OK             bool
	Err            string // a substring of the error, "" for none
}

func answer(t *testing.T, c Credentials, host string) basicAnswer {
	t.Helper()
	u, p, ok, err := c.Basic(context.Background(), host)
	a := basicAnswer{User: u, Password: p, OK: ok}
	if err != nil {
		a.Err = err.Error()
	}
	return a
}

func TestAnonymousAndStatic(t *testing.T) {
	if d := cmp.Diff(basicAnswer{}, answer(t, Anonymous{}, "ghcr.io")); d != "" {
		t.Errorf("Anonymous (-want +got):\n%s", d)
	}
	if d := cmp.Diff(basicAnswer{User: "u", Password: "p", OK: true}, answer(t, Static("u", "p"), "ghcr.io")); d != "" {
		t.Errorf("Static (-want +got):\n%s", d)
	}
}

func TestFromFiles(t *testing.T) {
	for _, tc := range []struct {
		name, user, content string
		want                string // the password; "" means refused
		wantErr             string
	}{
		{"newline trimmed", "u", "pw\n", "pw", ""},
		{"CRLF trimmed", "u", "pw\r\n", "pw", ""},
		{"no newline", "u", "pw", "pw", ""},
		{"inner spaces kept", "u", " p w ", " p w ", ""},
		{"empty", "u", "", "", "is empty"},
		{"only a newline", "u", "\n", "", "is empty"},
		{"two lines", "u", "pw\nother\n", "", "more than one line"},
		{"too large", "u", strings.Repeat("a", maxPasswordFile+1), "", "larger than"},
		{"at the bound", "u", strings.Repeat("a", maxPasswordFile), strings.Repeat("a", maxPasswordFile), ""},
		{"no username", "", "pw", "", "username is empty"},
		{"username with a colon", "a:b", "pw", "", "contains ':'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "password")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := FromFiles(tc.user, path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("FromFiles: %v, want an error saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(basicAnswer{User: tc.user, Password: tc.want, OK: true}, answer(t, c, "ghcr.io")); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	if _, err := FromFiles("u", filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v, want an error naming it", err)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// fakeHelper installs docker-credential-NAME on PATH: a shell script answering "get" from a
// table of host → JSON, or "credentials not found" the way real helpers do, and counting its
// runs in a file.
func fakeHelper(t *testing.T, name string, answers map[string]string) (runs func() int) {
	t.Helper()
	dir := t.TempDir()
	count := filepath.Join(dir, "runs")
	var script strings.Builder
	script.WriteString("#!/bin/sh\necho run >> " + count + "\nread host\ncase \"$host\" in\n")
	for host, out := range answers {
		script.WriteString("'" + host + "') echo '" + out + "' ;;\n")
	}
	script.WriteString("fail.example) echo 'keychain locked'; exit 1 ;;\n")
	script.WriteString("*) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n")
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(script.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return func() int {
		b, _ := os.ReadFile(count)
		return strings.Count(string(b), "run")
	}
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDockerConfig(t *testing.T) {
	fakeHelper(t, "fake", map[string]string{
		"gcr.io":                      `{"ServerURL":"gcr.io","Username":"_token","Secret":"helper-pw"}`,
		"https://index.docker.io/v1/": `{"ServerURL":"https://index.docker.io/v1/","Username":"hub-helper","Secret":"hub-pw"}`,
		"idtoken.example":             `{"ServerURL":"idtoken.example","Username":"<token>","Secret":"refresh"}`,
	})
	files := `{"auths":{
		"ghcr.io":{"auth":"` + b64("alice:ghcr-pw") + `"},
		"quay.io":{"username":"bob","password":"quay-pw"},
		"https://index.docker.io/v1/":{"auth":"` + b64("hubuser:hub-file-pw") + `"},
		"https://legacy.example/v1/":{"auth":"` + b64("old:legacy-pw") + `"},
		"localhost:5000":{"auth":"` + b64("local:local-pw") + `"},
		"empty.example":{},
		"oauth.example":{"identitytoken":"refresh-token"}
	},
	"credHelpers":{"gcr.io":"fake","fail.example":"fake","idtoken.example":"fake"}}`
	helperOnly := `{"auths":{"ghcr.io":{"auth":"` + b64("alice:ghcr-pw") + `"}},"credsStore":"fake"}`
	for _, tc := range []struct {
		name, config, host string
		want               basicAnswer
	}{
		{"auth field", files, "ghcr.io", basicAnswer{"alice", "ghcr-pw", true, ""}},
		{"host case", files, "GHCR.io", basicAnswer{"alice", "ghcr-pw", true, ""}},
		{"username and password", files, "quay.io", basicAnswer{"bob", "quay-pw", true, ""}},
		{"docker hub as registry-1", files, "registry-1.docker.io", basicAnswer{"hubuser", "hub-file-pw", true, ""}},
		{"docker hub as index", files, "index.docker.io", basicAnswer{"hubuser", "hub-file-pw", true, ""}},
		{"docker hub as docker.io", files, "docker.io", basicAnswer{"hubuser", "hub-file-pw", true, ""}},
		{"legacy URL key", files, "legacy.example", basicAnswer{"old", "legacy-pw", true, ""}},
		{"host with port", files, "localhost:5000", basicAnswer{"local", "local-pw", true, ""}},
		{"port matters", files, "localhost:5001", basicAnswer{}},
		{"unknown host", files, "elsewhere.example", basicAnswer{}},
		{"empty entry", files, "empty.example", basicAnswer{}},
		{"identity token", files, "oauth.example", basicAnswer{Err: "identity token"}},
		{"credHelpers", files, "gcr.io", basicAnswer{"_token", "helper-pw", true, ""}},
		{"helper has nothing", helperOnly, "quay.io", basicAnswer{}},
		{"helper fails", files, "fail.example", basicAnswer{Err: "keychain locked"}},
		{"helper identity token", files, "idtoken.example", basicAnswer{Err: "identity token"}},
		{"credsStore hides auths", helperOnly, "ghcr.io", basicAnswer{}},
		{"credsStore for docker hub", helperOnly, "registry-1.docker.io", basicAnswer{"hub-helper", "hub-pw", true, ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DockerConfig(writeConfig(t, tc.config))
			if err != nil {
				t.Fatal(err)
			}
			got := answer(t, c, tc.host)
			if tc.want.Err != "" && strings.Contains(got.Err, tc.want.Err) {
				got.Err = tc.want.Err
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("Basic(%q) (-want +got):\n%s", tc.host, d)
			}
		})
	}
}

func TestDockerConfigHelperAnswersAreKept(t *testing.T) {
	runs := fakeHelper(t, "fake", map[string]string{"gcr.io": `{"Username":"u","Secret":"p"}`})
	c, err := DockerConfig(writeConfig(t, `{"credsStore":"fake"}`))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		answer(t, c, "gcr.io")
		answer(t, c, "nothing.example")
	}
	if n := runs(); n != 2 {
		t.Errorf("helper ran %d times for 6 questions about 2 hosts, want 2", n)
	}
}

func TestDockerConfigRefused(t *testing.T) {
	for _, tc := range []struct{ name, config, want string }{
		{"not JSON", `{"auths":`, "docker config"},
		{"bad base64", `{"auths":{"ghcr.io":{"auth":"%%%"}}}`, "illegal base64"},
		{"auth without a colon", `{"auths":{"ghcr.io":{"auth":"` + b64("nocolon") + `"}}}`, "invalid auth"},
		{"helper path", `{"credsStore":"../../bin/sh"}`, "path separator"},
		{"helper path in credHelpers", `{"credHelpers":{"ghcr.io":"/bin/sh"}}`, "path separator"},
		{"too large", `{"auths":{}, "x":"` + strings.Repeat("a", maxDockerConfig) + `"}`, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DockerConfig(writeConfig(t, tc.config))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DockerConfig: %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if _, err := DockerConfig(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file accepted")
	}
}
