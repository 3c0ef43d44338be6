// Package app wires a validated configuration into a running service: it opens the GeoIP
// databases and mirror backends, builds the redirector, and runs the HTTP servers until the
// context ends. It is the only package that knows every other one; cmd/oci-proxy only parses flags.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/redirector"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// Build information, set by main from -ldflags.
type BuildInfo struct {
	Version, Commit, Date string
}

// Service is a built oci-proxy. Its configuration lives in a generation that a reload replaces
// atomically: requests in flight finish on the generation they started with.
type Service struct {
	log     *slog.Logger
	info    BuildInfo
	metrics *Metrics
	demand  *demandVecs
	cur     atomic.Pointer[generation]

	// Set by Watch; a service without them is never reloaded.
	path  string
	ov    config.Overrides
	every time.Duration

	runCtx context.Context // set by Run, for the background work of later generations

	// grace is how long Run keeps serving after its context ends, with /readyz answering 503,
	// so that a load balancer stops sending traffic before the listener closes.
	grace    time.Duration
	draining atomic.Bool

	reloadMu sync.Mutex // one reload at a time
	failed   stamps     // the files of the last refused reload, so it is not retried until they change
}

// generation is everything built from one configuration.
type generation struct {
	cfg     *config.Config
	parts   *Parts
	handler http.Handler
	admin   http.Handler // nil unless the admin endpoints are on their own listener
	files   stamps
	stop    context.CancelFunc // stops the selector's probes; set once running
}

// New builds the service from cfg. Everything that can fail (files, databases, backends) fails
// here, with the file or mirror named, before any port is opened.
func New(ctx context.Context, cfg *config.Config, info BuildInfo, log *slog.Logger) (*Service, error) {
	s := &Service{log: log, info: info, metrics: NewMetrics(info)}
	s.demand = newDemandVecs(s.metrics.reg)
	g, err := s.build(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s.metrics.SetSelector(g.parts.Selector)
	s.cur.Store(g)
	return s, nil
}

func (s *Service) build(ctx context.Context, cfg *config.Config) (*generation, error) {
	ups, err := UpstreamTable(cfg)
	if err != nil {
		return nil, err
	}
	// Stamped before the files are opened, for the same reason as in reload.
	files := fileStamps(cfg)
	parts, err := BuildParts(ctx, cfg, s.log)
	if err != nil {
		return nil, err
	}
	g := &generation{cfg: cfg, parts: parts, files: files}
	// /metrics, and /_/resolve when enabled, are served on admin.listen when it is set (then not
	// on the public listener), else on the public one.
	mount := map[string]http.Handler{}
	adminPaths := map[string]http.Handler{"/metrics": s.metrics.Handler()}
	if cfg.Admin.Enabled {
		adminPaths["/_/resolve"] = resolveHandler(parts, ups, s.log)
		if s.demand != nil {
			adminPaths["/_/demand"] = s.demand.handler()
		}
	}
	if cfg.Admin.Listen == "" {
		maps.Copy(mount, adminPaths)
	} else {
		admin := http.NewServeMux()
		for p, h := range adminPaths {
			admin.Handle(p, h)
		}
		admin.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		// Profiles only on a listener of its own, which operators keep private: never on the
		// public one, where anyone could make the service spend 30 s profiling itself.
		admin.HandleFunc("/debug/pprof/", pprof.Index)
		admin.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
		admin.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		admin.HandleFunc("/debug/pprof/trace", pprof.Trace)
		g.admin = admin
	}
	opts := redirector.Options{
		Upstream:   ups,
		ClientAddr: parts.ClientIP.FromRequest,
		Ready:      s.ready(parts),
		Mount:      mount,
		Observer:   s.metrics,
		Logger:     s.log,
		Index:      indexInfo(cfg, ups, parts, s.info.Version),
	}
	if len(cfg.Mirrors) > 0 {
		// What each mirror missed since the service started: this replica's demand counters.
		opts.Index.Misses = s.demand.MirrorMisses
		opts.Blobs = blobRouter{loc: parts.Locator, sel: parts.Selector, log: s.log, demand: s.demand.recorder(cfg, parts.Selector.Mirrors())}
	}
	if hasProxyRoute(cfg) {
		clients, err := newUpstreamClients(cfg, s.log)
		if err != nil {
			parts.Close()
			return nil, err
		}
		parts.closers = append(parts.closers, clients)
		opts.Proxy = newProxies(cfg, clients, s.metrics, s.log)
		if ups.ClientAuth() {
			mount[TokenPath] = tokenRelay(ups, s.log)
		}
	}
	g.handler = redirector.New(opts)
	return g, nil
}

// UpstreamTable builds the upstream routes of cfg.
func UpstreamTable(cfg *config.Config) (*upstream.Table, error) {
	var routes []upstream.Route
	for _, r := range cfg.Routes {
		routes = append(routes, upstream.Route{Prefix: r.Prefix, Base: r.Upstream, Mode: routeMode(r.Mode), ClientAuth: r.Auth.Client})
	}
	t, err := upstream.NewTable(cfg.Upstream, routes)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	return t, nil
}

// Handler returns the HTTP handler: it serves each request with the current generation.
func (s *Service) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.cur.Load().handler.ServeHTTP(w, r)
}

// serveAdmin serves the admin listener; after a reload that turned the admin endpoints off (or
// onto the main listener) it answers 404.
func (s *Service) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if a := s.cur.Load().admin; a != nil {
		a.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}

// DefaultShutdownGrace is `serve --shutdown-grace`: a few seconds covers a load balancer's readiness
// probe period, so that it stops sending requests before the listener closes.
const DefaultShutdownGrace = 5 * time.Second

// SetShutdownGrace sets how long Run goes on serving after its context ends, with /readyz
// answering 503 from the first moment; 0 (the default) shuts down at once. Call before Run.
func (s *Service) SetShutdownGrace(d time.Duration) { s.grace = d }

// errDraining is /readyz's answer while the service shuts down.
var errDraining = errors.New("shutting down")

// ready backs /readyz: not ready once shutting down, else as the generation's parts say.
func (s *Service) ready(parts *Parts) func() error {
	return func() error {
		if s.draining.Load() {
			return errDraining
		}
		return parts.Ready()
	}
}

// Close releases databases and clients.
func (s *Service) Close() error { return s.cur.Load().parts.Close() }

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
	return newServer(addr, h, log)
}

// newPublicServer returns the server of the public listener, whose connections carry nearly all
// the traffic, to be served on a listener wrapped by publicListener. See deadline.go: its
// deadlines bound the same things as NewServer's, moving a connection's timers two or three times
// per request instead of five.
func newPublicServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return publicServerWith(addr, h, log, readHeaderTimeout)
}

// publicServerWith is newPublicServer with read in place of readHeaderTimeout, for tests.
func publicServerWith(addr string, h http.Handler, log *slog.Logger, read time.Duration) *http.Server {
	srv := newServer(addr, bodyDeadline(h, read), log)
	srv.ReadHeaderTimeout = read
	srv.ReadTimeout = 0
	srv.WriteTimeout = 0
	return srv
}

// publicListener wraps ln for newPublicServer.
func publicListener(ln net.Listener) net.Listener {
	return deadlineListener{Listener: ln, writeTimeout: writeTimeout}
}

func newServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
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
// With Watch, it also reloads the configuration when its files change.
func (s *Service) Run(ctx context.Context) error {
	g := s.cur.Load()
	cfg := g.cfg
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srvs := []*http.Server{newPublicServer(cfg.Listen, s.Handler(), s.log)}
	lns := []net.Listener{publicListener(ln)}
	if g.admin != nil {
		aln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s (admin): %w", cfg.Admin.Listen, err)
		}
		srvs = append(srvs, NewServer(cfg.Admin.Listen, http.HandlerFunc(s.serveAdmin), s.log))
		lns = append(lns, aln)
		s.log.Info("admin endpoints", "listen", aln.Addr().String())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.reloadMu.Lock()
	s.runCtx = ctx
	g = s.cur.Load()
	s.start(ctx, g)
	s.reloadMu.Unlock()
	if s.path != "" && s.every > 0 {
		go s.watch(ctx)
	}
	s.log.Info("serving", "listen", ln.Addr().String(), "upstream", cfg.Upstream, "mirrors", len(cfg.Mirrors))
	err = s.serve(ctx, srvs, lns)
	s.reloadMu.Lock()
	if g := s.cur.Load(); g.stop != nil {
		g.stop()
	}
	s.reloadMu.Unlock()
	return err
}

// start runs g's background work (mirror probes) until ctx ends or g is replaced.
func (s *Service) start(ctx context.Context, g *generation) {
	gctx, stop := context.WithCancel(ctx)
	g.stop = stop
	go g.parts.Selector.Run(gctx)
}

func (s *Service) serve(ctx context.Context, srvs []*http.Server, lns []net.Listener) error {
	log := s.log
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
		// Not ready at once, still serving for the grace: the load balancer takes the replica
		// out of rotation on its next /readyz and the requests it sends meanwhile are answered.
		s.draining.Store(true)
		log.Info("shutting down", "grace", s.grace)
		if s.grace > 0 {
			select {
			case <-time.After(s.grace):
			case runErr = <-errc:
			}
		}
	case runErr = <-errc:
		s.draining.Store(true)
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

func routeMode(m config.Mode) upstream.Mode {
	if m == config.Proxy {
		return upstream.Proxy
	}
	return upstream.Redirect
}

func hasProxyRoute(cfg *config.Config) bool {
	for _, r := range cfg.Routes {
		if r.Mode == config.Proxy {
			return true
		}
	}
	return false
}

// describeRoute says where a route's names go and how: "tools/ → https://ghcr.io/v2/acme/
// (proxy, clients' credentials)"; the default route's prefix shows as "(any other name)".
func describeRoute(r *upstream.Route) string {
	prefix := r.Prefix
	if prefix == "" {
		prefix = "(any other name)"
	}
	how := r.Mode.String()
	if r.ClientAuth {
		how += ", clients' credentials"
	}
	return prefix + " → " + r.String() + " (" + how + ")"
}
