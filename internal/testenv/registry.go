package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/crypto/bcrypt"
)

// RegistryOptions configure StartRegistry. The zero value is an anonymous registry on 127.0.0.2
// that sends no notifications.
type RegistryOptions struct {
	// Host is the loopback address to listen on; "" means 127.0.0.2.
	Host string
	// Notify are endpoints the registry POSTs its event envelopes to (push, pull, delete), as the
	// distribution notification system does in production; none when empty.
	Notify []NotifyEndpoint
	// Users turns on htpasswd (basic) authentication with these user → password pairs; nil or
	// empty leaves the registry anonymous.
	Users map[string]string
}

// NotifyEndpoint is one entry of the registry's notifications.endpoints.
type NotifyEndpoint struct {
	URL string
	// Headers are sent with every envelope, e.g. {"Authorization": {"Bearer TOKEN"}}.
	Headers map[string][]string
	// IgnoreActions lists actions ("pull", "push", "delete") not to send; none ignored when empty.
	IgnoreActions []string
}

// Registry is a running distribution 2.8 registry with filesystem storage in a test temp dir.
type Registry struct {
	Host string // "127.0.0.2:PORT"
	URL  string // "http://127.0.0.2:PORT", without /v2/
	Dir  string // storage root
	// Auth authenticates go-containerregistry calls: the first user (by name) when Users was set,
	// else anonymous.
	Auth authn.Authenticator
	Proc *Process
}

// StartRegistry starts `docker-registry serve` and waits until /v2/ answers. It stops with the test.
func StartRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	bin := Need(t, "docker-registry", "apt-get install -y docker-registry")
	host := opts.Host
	if host == "" {
		host = "127.0.0.2"
	}
	dir := t.TempDir()
	r := &Registry{Host: Addr(t, host), Dir: filepath.Join(dir, "storage"), Auth: authn.Anonymous}
	r.URL = "http://" + r.Host

	// JSON is YAML, so the config needs no YAML library and every value is quoted correctly.
	cfg := map[string]any{
		"version": "0.1",
		"log":     map[string]any{"level": "info", "formatter": "text"},
		"storage": map[string]any{
			"filesystem": map[string]any{"rootdirectory": r.Dir},
			"delete":     map[string]any{"enabled": true},
			// The purger walks storage at start; it only adds noise to short-lived test registries.
			"maintenance": map[string]any{"uploadpurging": map[string]any{"enabled": false}},
		},
		"http": map[string]any{
			"addr": r.Host,
			// A fixed secret silences the "No HTTP secret provided" warning; nothing is shared.
			"secret": "oci-proxy-test",
		},
	}
	if len(opts.Notify) > 0 {
		var eps []map[string]any
		for i, n := range opts.Notify {
			ep := map[string]any{
				"name": fmt.Sprintf("endpoint-%d", i),
				"url":  n.URL,
				// Short timeouts and backoff: a test waits for the event, so a slow retry would
				// look like a missing one.
				"timeout":   "2s",
				"threshold": 3,
				"backoff":   "500ms",
			}
			if len(n.Headers) > 0 {
				ep["headers"] = n.Headers
			}
			if len(n.IgnoreActions) > 0 {
				ep["ignore"] = map[string]any{"actions": n.IgnoreActions}
			}
			eps = append(eps, ep)
		}
		cfg["notifications"] = map[string]any{"endpoints": eps}
	}
	if len(opts.Users) > 0 {
		path := filepath.Join(dir, "htpasswd")
		writeHtpasswd(t, path, opts.Users)
		cfg["auth"] = map[string]any{"htpasswd": map[string]any{"realm": "oci-proxy-test", "path": path}}
		names := make([]string, 0, len(opts.Users))
		for u := range opts.Users {
			names = append(names, u)
		}
		sort.Strings(names)
		r.Auth = &authn.Basic{Username: names[0], Password: opts.Users[names[0]]}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("registry config: %v", err)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r.Proc = Start(t, "docker-registry "+r.Host, nil, bin, "serve", cfgPath)
	// Any status will do: with auth on, /v2/ answers 401 once the registry is up.
	WaitHTTP(t, r.Proc, r.URL+"/v2/")
	return r
}

// Ref returns the reference of repo (with ":tag" or "@digest" appended by the caller) on this
// registry, e.g. r.Ref("acme/images/app:1.0") = "127.0.0.2:PORT/acme/images/app:1.0".
func (r *Registry) Ref(repoAndRef string) string { return r.Host + "/" + repoAndRef }

func writeHtpasswd(t testing.TB, path string, users map[string]string) {
	t.Helper()
	var b []byte
	for u, p := range users {
		// distribution accepts only bcrypt entries; MinCost keeps registry start-up fast.
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("hash password of %s: %v", u, err)
		}
		b = append(b, u+":"+string(h)+"\n"...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
