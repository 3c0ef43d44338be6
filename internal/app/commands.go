package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// ErrInput is wrapped by the errors about a command's own arguments (not its configuration), so
// that main can answer them with its usage exit code.
var ErrInput = errors.New("bad argument")

// overrides are the settings of the environment and command line that beat the file's: the
// UpstreamRegistry variable of the original tool, and the listen address from --listen or $PORT.
func overrides(listen string) config.Overrides {
	ov := config.Overrides{Upstream: os.Getenv("UpstreamRegistry"), Listen: listen}
	if ov.Listen == "" && os.Getenv("PORT") != "" {
		ov.Listen = ":" + os.Getenv("PORT")
	}
	return ov
}

// LoadServeConfig loads the configuration `serve` runs on: the file with the environment's and
// listen's overrides or, without a file, the UpstreamRegistry variable alone.
func LoadServeConfig(path, listen string) (*config.Config, error) {
	ov := overrides(listen)
	if path == "" {
		if ov.Upstream == "" {
			return nil, errors.New("no configuration: pass --config FILE or set UpstreamRegistry")
		}
		return config.FromEnv(ov)
	}
	return config.Load(path, ov)
}

// LoadConfig loads a file for the other commands: UpstreamRegistry still overrides its upstream.
func LoadConfig(path string) (*config.Config, error) {
	return config.Load(path, config.Overrides{Upstream: os.Getenv("UpstreamRegistry")})
}

// Validate checks the configuration file at path and everything it names, the way serve would
// build it, and prints one line when it is good. A configuration that passes here starts.
func Validate(ctx context.Context, path string, w io.Writer) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		return err
	}
	// Building the service opens the databases and range files and reads credentials files, so
	// that validate refuses what serve would refuse. Nothing is fetched over the network.
	svc, err := New(ctx, cfg, BuildInfo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	if err := svc.Close(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s: ok (upstream %s, %d mirrors)\n", path, defaultUpstream(cfg), len(cfg.Mirrors))
	return err
}

func defaultUpstream(cfg *config.Config) string {
	if cfg.Upstream != nil {
		return cfg.Upstream.String()
	}
	for _, r := range cfg.Routes {
		if r.Prefix == "" {
			return r.Upstream.String()
		}
	}
	return ""
}

// ResolveQuery is what `oci-proxy resolve` explains: a client address and optionally a blob.
type ResolveQuery struct {
	Name   string // optional: also say which route and mode this repository name takes
	IP     string // required
	Digest string // optional: also check which mirrors hold it
	Method string // GET or HEAD; "" is GET
	JSON   bool
}

// Resolve explains, for the configuration at path, where a blob request from q.IP would go and
// why, mirror by mirror; the same explanation as GET /_/resolve.
func Resolve(ctx context.Context, path string, q ResolveQuery, w io.Writer) error {
	addr, err := netip.ParseAddr(q.IP)
	if err != nil {
		return fmt.Errorf("%w: --ip must be an IP address, not %q", ErrInput, q.IP)
	}
	var d oci.Digest
	if q.Digest != "" {
		if d, err = oci.ParseDigest(q.Digest); err != nil {
			return fmt.Errorf("%w: --digest: %v", ErrInput, err)
		}
	}
	method := q.Method
	switch method {
	case "":
		method = "GET"
	case "GET", "HEAD":
	default:
		return fmt.Errorf("%w: --method must be GET or HEAD", ErrInput)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		return err
	}
	var route *RouteExplanation
	if q.Name != "" {
		ups, err := UpstreamTable(cfg)
		if err != nil {
			return err
		}
		if route, err = explainRoute(ups, q.Name); err != nil {
			return fmt.Errorf("%w: --name: %v", ErrInput, err)
		}
	}
	parts, err := BuildParts(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer parts.Close()
	return writeResolve(w, route, parts.Explain(ctx, addr, d, method), q.JSON)
}

// writeResolve writes an explanation, with the route of a name first when there is one: the one
// output of `oci-proxy resolve` and /_/resolve.
func writeResolve(w io.Writer, route *RouteExplanation, e mirrors.Explanation, asJSON bool) error {
	if route == nil {
		return writeExplanation(w, e, asJSON)
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Route *RouteExplanation   `json:"route"`
			Blob  mirrors.Explanation `json:"blob"`
		}{route, e})
	}
	if _, err := fmt.Fprintf(w, "name %s: %s\nupstream repository %s, manifests by %s\n\n", route.Name, route.Description, route.UpstreamRepository, route.Mode); err != nil {
		return err
	}
	return e.WriteText(w)
}

// RouteExplanation is which route a repository name takes.
type RouteExplanation struct {
	Name               string `json:"name"`
	Prefix             string `json:"prefix"`
	Upstream           string `json:"upstream"`
	Mode               string `json:"mode"` // redirect or proxy
	ClientCredentials  bool   `json:"client_credentials"`
	UpstreamRepository string `json:"upstream_repository"` // host/path as the upstream knows it
	Description        string `json:"description"`
}

func explainRoute(ups *upstream.Table, name string) (*RouteExplanation, error) {
	if err := oci.ValidateName(name); err != nil {
		return nil, err
	}
	r, upName := ups.Lookup(name)
	host, repo := r.Repository(upName)
	return &RouteExplanation{
		Name:   name,
		Prefix: r.Prefix, Upstream: r.String(), Mode: r.Mode.String(), ClientCredentials: r.ClientAuth,
		UpstreamRepository: host + "/" + repo, Description: describeRoute(r),
	}, nil
}

// Explain is the one explanation of a blob decision, shared by `resolve` and /_/resolve.
func (p *Parts) Explain(ctx context.Context, addr netip.Addr, d oci.Digest, method string) mirrors.Explanation {
	loc := p.Locator.Locate(addr) // Locate gives the address one spelling
	return p.Selector.Explain(ctx, mirrors.Query{Loc: loc, Digest: d, Method: method})
}

func writeExplanation(w io.Writer, e mirrors.Explanation, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(e)
	}
	return e.WriteText(w)
}
