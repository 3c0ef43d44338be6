// Package app wires a validated configuration into a running service: it opens the GeoIP
// databases and mirror backends, builds the redirector, and runs the HTTP servers until the
// context ends. It is the only package that knows every other one; cmd/oci-proxy only parses flags.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/redirector"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// Build information, set by main from -ldflags.
type BuildInfo struct {
	Version, Commit, Date string
}

// Service is a built, not yet running, oci-proxy.
type Service struct {
	cfg     *config.Config
	log     *slog.Logger
	parts   *Parts
	handler http.Handler
	admin   http.Handler // on its own listener when cfg.Admin.Listen is set
}

// New builds the service from cfg. Everything that can fail (files, databases, backends) fails
// here, with the file or mirror named, before any port is opened.
func New(ctx context.Context, cfg *config.Config, info BuildInfo, log *slog.Logger) (*Service, error) {
	ups, err := UpstreamTable(cfg)
	if err != nil {
		return nil, err
	}
	parts, err := BuildParts(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, parts: parts}
	metrics := NewMetrics(info, parts.Selector)
	mount := map[string]http.Handler{"/metrics": metrics.Handler()}
	if cfg.Admin.Enabled {
		admin := http.NewServeMux()
		admin.Handle("/_/resolve", resolveHandler(parts, log))
		if cfg.Admin.Listen == "" {
			mount["/_/resolve"] = admin
		} else {
			s.admin = admin
		}
	}
	opts := redirector.Options{
		Upstream:   ups,
		ClientAddr: parts.ClientIP.FromRequest,
		Mount:      mount,
		Observer:   metrics,
		Logger:     log,
		Index: redirector.IndexInfo{
			Upstream: ups.Routes()[len(ups.Routes())-1].String(),
			Version:  info.Version,
		},
	}
	if len(cfg.Mirrors) > 0 {
		opts.Blobs = blobRouter{loc: parts.Locator, sel: parts.Selector, log: log}
		for _, m := range cfg.Mirrors {
			if m.IsEnabled() {
				opts.Index.Mirrors = append(opts.Index.Mirrors, mirrorLabel(m))
			}
		}
	}
	s.handler = redirector.New(opts)
	return s, nil
}

func mirrorLabel(m config.Mirror) string {
	if m.Country != "" {
		return m.Name + " (" + m.Country + ")"
	}
	return m.Name
}

// UpstreamTable builds the upstream routes of cfg.
func UpstreamTable(cfg *config.Config) (*upstream.Table, error) {
	var routes []upstream.Route
	for _, r := range cfg.Routes {
		routes = append(routes, upstream.Route{Prefix: r.Prefix, Base: r.UpstreamURL})
	}
	t, err := upstream.NewTable(cfg.UpstreamURL, routes)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	return t, nil
}

// Handler returns the HTTP handler (for tests and benchmarks).
func (s *Service) Handler() http.Handler { return s.handler }

// Close releases databases and clients.
func (s *Service) Close() error { return s.parts.Close() }

// Timeouts of the HTTP server. Every answer is a small redirect or error, so requests and responses
// are tiny; the limits only have to outlast slow networks, not big bodies.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 32 << 10
	shutdownTimeout   = 20 * time.Second
)

// NewServer returns an http.Server with every timeout set.
func NewServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// Run serves until ctx ends, then shuts down gracefully: in-flight requests finish (up to 20 s).
func (s *Service) Run(ctx context.Context) error {
	srv := NewServer(s.cfg.Listen, s.handler, s.log)
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	srvs, lns := []*http.Server{srv}, []net.Listener{ln}
	if s.admin != nil {
		aln, err := net.Listen("tcp", s.cfg.Admin.Listen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (admin): %w", s.cfg.Admin.Listen, err)
		}
		srvs = append(srvs, NewServer(s.cfg.Admin.Listen, s.admin, s.log))
		lns = append(lns, aln)
		s.log.Info("admin endpoints", "listen", aln.Addr().String())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.parts.Selector.Run(ctx)
	s.log.Info("serving", "listen", ln.Addr().String(), "upstream", s.cfg.Upstream, "mirrors", len(s.cfg.Mirrors))
	return serve(ctx, s.log, srvs, lns)
}

func serve(ctx context.Context, log *slog.Logger, srvs []*http.Server, lns []net.Listener) error {
	errc := make(chan error, len(srvs))
	for i := range srvs {
		go func() {
			if err := srvs[i].Serve(lns[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := []error{runErr}
	var mu sync.Mutex
	for _, srv := range srvs {
		wg.Go(func() {
			if err := srv.Shutdown(sctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("shutdown %s: %w", srv.Addr, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
