package auth

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/credentials"
	"github.com/docker/docker-credential-helpers/client"
	helpers "github.com/docker/docker-credential-helpers/credentials"
	"golang.org/x/sync/singleflight"
)

// dockerHubKey is where Docker keeps Docker Hub's credentials, whichever of its host names a
// request uses.
const dockerHubKey = "https://index.docker.io/v1/"

const (
	// maxDockerConfig bounds config.json; real ones are a few KiB.
	maxDockerConfig = 1 << 20
	// Credential helper answers are kept for helperTTL: Transport asks for credentials on every
	// request, and running a program each time would cost milliseconds per request. Five
	// minutes is short next to the lifetime of the tokens helpers hand out (an hour or more),
	// and a rotated secret is picked up soon enough. A helper that has nothing for a host is
	// asked again after helperMissTTL.
	helperTTL      = 5 * time.Minute
	helperMissTTL  = 30 * time.Second
	helperTimeout  = 10 * time.Second
	maxHelperHosts = 64
)

// dockerConfig is the Credentials of a Docker config.json, read once.
type dockerConfig struct {
	path    string
	auths   map[string]dockerAuth // by canonical host
	helpers map[string]string     // credHelpers, by canonical host
	store   string                // credsStore: the helper for every other host
	answers *ttlCache[string, dockerAuth]
	group   singleflight.Group
}

// dockerAuth is what config.json or a helper holds for one host. unsupported names a kind of
// credential oci-proxy cannot present (an identity token needs the OAuth2 refresh flow).
type dockerAuth struct {
	username    string
	password    secret
	unsupported string
}

// DockerConfig returns the credentials of the Docker config.json at path, read once: a reload
// builds new credentials. It honours what `docker login` writes: "auths" entries with "auth"
// (base64 "user:password") or "username" and "password", keyed by host or by legacy URL;
// "credHelpers" per host; and "credsStore" for every other host, which, as in Docker, hides the
// file's own "auths". Helpers (docker-credential-NAME on PATH) run when a host is first asked
// for; their answers are kept five minutes.
//
// Docker Hub's credentials are looked up under "https://index.docker.io/v1/" for any of its
// host names (registry-1.docker.io, index.docker.io, docker.io). Credentials given as an
// identity or registry token are reported as an error when their host is asked for.
// DOCKER_AUTH_CONFIG and other environment variables are not read.
func DockerConfig(path string) (Credentials, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDockerConfig+1))
	if err != nil {
		return nil, fmt.Errorf("docker config: read %s: %w", path, err)
	}
	if len(b) > maxDockerConfig {
		return nil, fmt.Errorf("docker config %s: larger than %d bytes", path, maxDockerConfig)
	}
	cf := configfile.New(path)
	if err := cf.LoadFromReader(bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	d := &dockerConfig{
		path:    path,
		auths:   make(map[string]dockerAuth, len(cf.AuthConfigs)),
		helpers: make(map[string]string, len(cf.CredentialHelpers)),
		store:   cf.CredentialsStore,
		answers: newTTLCache[string, dockerAuth](maxHelperHosts),
	}
	if err := checkHelperName(cf.CredentialsStore); err != nil {
		return nil, fmt.Errorf("docker config %s: credsStore: %w", path, err)
	}
	// Sorted so that, when a host appears under several keys, the choice does not depend on map
	// order; the key Docker itself would write wins.
	for _, key := range slices.Sorted(maps.Keys(cf.CredentialHelpers)) {
		name := cf.CredentialHelpers[key]
		if err := checkHelperName(name); err != nil {
			return nil, fmt.Errorf("docker config %s: credHelpers %q: %w", path, key, err)
		}
		if h := canonicalHost(key); d.helpers[h] == "" || key == serverKey(h) {
			d.helpers[h] = name
		}
	}
	for _, key := range slices.Sorted(maps.Keys(cf.AuthConfigs)) {
		ac := cf.AuthConfigs[key]
		a := dockerAuth{username: ac.Username, password: newSecret(ac.Password)}
		switch {
		case ac.Password != "" || ac.Username != "":
		case ac.IdentityToken != "":
			a = dockerAuth{unsupported: "an identity token"}
		case ac.RegistryToken != "":
			a = dockerAuth{unsupported: "a registry token"}
		}
		h := canonicalHost(key)
		if _, seen := d.auths[h]; !seen || key == serverKey(h) {
			d.auths[h] = a
		}
	}
	return d, nil
}

func (d *dockerConfig) Basic(ctx context.Context, host string) (string, string, bool, error) {
	h := canonicalHost(host)
	var a dockerAuth
	if helper := cmp.Or(d.helpers[h], d.store); helper != "" {
		var err error
		if a, err = d.fromHelper(ctx, helper, h); err != nil {
			return "", "", false, err
		}
	} else {
		a = d.auths[h]
	}
	if a.unsupported != "" {
		return "", "", false, fmt.Errorf("docker config %s: the credentials for %s are %s, which oci-proxy cannot present", d.path, h, a.unsupported)
	}
	if a.username == "" && a.password.reveal() == "" {
		return "", "", false, nil
	}
	return a.username, a.password.reveal(), true, nil
}

func (d *dockerConfig) fromHelper(ctx context.Context, helper, h string) (dockerAuth, error) {
	if a, ok := d.answers.get(h, time.Now()); ok {
		return a, nil
	}
	v, err, _ := d.group.Do(h, func() (any, error) {
		// Detached from the first caller: its cancellation must not fail the others waiting.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), helperTimeout)
		defer cancel()
		program := func(args ...string) client.Program {
			return &helperCommand{cmd: exec.CommandContext(ctx, "docker-credential-"+helper, args...)}
		}
		c, err := client.Get(program, serverKey(h))
		now := time.Now()
		if helpers.IsErrCredentialsNotFound(err) {
			d.answers.put(h, dockerAuth{}, now.Add(helperMissTTL), now)
			return dockerAuth{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("docker config %s: credential helper %q for %s: %w", d.path, helper, h, err)
		}
		a := dockerAuth{username: c.Username, password: newSecret(c.Secret)}
		if c.Username == "<token>" { // how helpers mark an identity token
			a = dockerAuth{unsupported: "an identity token"}
		}
		d.answers.put(h, a, now.Add(helperTTL), now)
		return a, nil
	})
	if err != nil {
		return dockerAuth{}, err
	}
	return v.(dockerAuth), nil
}

func (d *dockerConfig) String() string   { return "docker config " + d.path }
func (d *dockerConfig) GoString() string { return d.String() }

// Format prints String for every verb: the struct holds passwords in unexported fields, which
// fmt would print as they are.
func (d *dockerConfig) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, d.String()) }

func (d *dockerConfig) LogValue() slog.Value {
	return slog.GroupValue(slog.String("docker_config", d.path))
}

// helperCommand runs a credential helper under a context. The helpers library's own runner
// takes none and copies the helper's stderr to ours.
type helperCommand struct{ cmd *exec.Cmd }

func (c *helperCommand) Output() ([]byte, error) { return c.cmd.Output() }
func (c *helperCommand) Input(in io.Reader)      { c.cmd.Stdin = in }

// checkHelperName refuses a helper name that would make "docker-credential-"+name a path.
func checkHelperName(name string) error {
	if strings.ContainsAny(name, `/\`) {
		return fmt.Errorf("helper name %q contains a path separator", name)
	}
	return nil
}

// canonicalHost is the host a config.json key or a request host stands for: legacy URL keys
// ("https://ghcr.io/v1/") become their host, and every name of Docker Hub becomes "docker.io".
func canonicalHost(s string) string {
	h := strings.ToLower(credentials.ConvertToHostname(s))
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return h
}

// serverKey is the key Docker writes for a canonical host, and what helpers are asked for.
func serverKey(h string) string {
	if h == "docker.io" {
		return dockerHubKey
	}
	return h
}
