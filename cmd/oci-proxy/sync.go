package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/internal/app"
	"github.com/happy-turtle/oci-proxy/syncer"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// syncCmd copies blobs from the upstream into the writable mirrors: once, printing the report
// and failing when anything failed, or, with --every and/or --listen, at start, on a schedule and
// when the registry announces a push, until SIGINT or SIGTERM.
func syncCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sync", stderr)
	cfgPath := fs.String("config", "config.yaml", "configuration file (YAML)")
	dryRun := fs.Bool("dry-run", false, "only report what would be copied")
	every := fs.Duration("every", 0, "run at start and then every DURATION (with up to 10% jitter) until SIGTERM; 0: once")
	concurrency := fs.Int("concurrency", syncer.DefaultConcurrency, "blobs copied at once")
	asJSON := fs.Bool("json", false, "print reports as JSON")
	listen := fs.String("listen", "", "serve the push webhooks (POST /webhooks/registry, /webhooks/pubsub) on ADDR")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *every < 0 || (*every > 0 && *every < time.Second) {
		fmt.Fprintf(stderr, "oci-proxy sync: --every must be at least 1s\n")
		return errUsage
	}
	if *concurrency < 1 {
		fmt.Fprintf(stderr, "oci-proxy sync: --concurrency must be at least 1\n")
		return errUsage
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath, config.Overrides{Upstream: os.Getenv("UpstreamRegistry")})
	if err != nil {
		return err
	}
	if len(cfg.Sync.Repositories) == 0 {
		return fmt.Errorf("%s: sync.repositories is empty: nothing to copy", cfg.File)
	}
	ups, err := app.UpstreamTable(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	targets, closer, err := app.Writers(ctx, cfg)
	if err != nil {
		return err
	}
	defer closer.Close()
	s := syncer.New(cfg, ups, targets, syncer.Options{Concurrency: *concurrency, DryRun: *dryRun, Logger: log})

	show := func(rep syncer.Report) error {
		if *asJSON {
			return json.NewEncoder(stdout).Encode(rep)
		}
		return rep.WriteText(stdout)
	}
	if *listen != "" {
		if err := serveWebhooks(ctx, cfg, ups, s, *listen, *concurrency, show, log); err != nil {
			return err
		}
	}
	if *every == 0 && *listen == "" {
		rep, err := s.All(ctx)
		if perr := show(rep); perr != nil {
			return perr
		}
		if err != nil {
			return err
		}
		if n := rep.Failures(); n > 0 {
			return fmt.Errorf("sync: %d failures", n)
		}
		return nil
	}
	for {
		rep, err := s.All(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if *every == 0 {
			// Webhooks only: one full run to catch up, then pushes drive the copies.
			if perr := show(rep); perr != nil {
				log.Error("sync: print report", slog.String("reason", perr.Error()))
			}
			<-ctx.Done()
			return nil
		}
		if perr := show(rep); perr != nil {
			log.Error("sync: print report", slog.String("reason", perr.Error()))
		}
		if err != nil {
			log.Error("sync: run failed", slog.String("reason", err.Error()))
		}
		// Jitter keeps replicas started together from hitting the upstream together.
		wait := *every + rand.N(*every/10+1)
		log.Info("sync: next run", slog.Duration("in", wait), slog.Int("failures", rep.Failures()))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// serveWebhooks starts the push webhooks on addr: each announced push is queued and copied with
// s.Ref by a few workers, so that a registry's retries and bursts cost one copy each. The server
// stops when ctx ends.
func serveWebhooks(ctx context.Context, cfg *config.Config, ups *upstream.Table, s *syncer.Syncer, addr string, workers int,
	show func(syncer.Report) error, log *slog.Logger) error {
	if cfg.Sync.Webhook.TokenFile == "" {
		return fmt.Errorf("%s: sync.webhook.token_file is required with --listen: every event must carry the token", cfg.File)
	}
	token, err := syncer.ReadTokenFile(cfg.Sync.Webhook.TokenFile)
	if err != nil {
		return err
	}
	q := syncer.NewQueue(func(ctx context.Context, p syncer.Push) {
		rep, err := s.Ref(ctx, p.Repo, p.Ref)
		if err != nil {
			log.Error("sync: push failed", slog.String("push", p.String()), slog.String("reason", err.Error()))
		}
		if perr := show(rep); perr != nil {
			log.Error("sync: print report", slog.String("reason", perr.Error()))
		}
	}, workers, syncer.QueueLogger(log))
	hooks, err := syncer.NewWebhookHandler(syncer.WebhookOptions{Token: token, Upstream: ups, Trigger: q.Trigger, Logger: log})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(syncer.RegistryWebhookPath, hooks)
	mux.Handle(syncer.PubSubWebhookPath, hooks)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := app.NewServer(addr, mux, log)
	go q.Run(ctx)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("sync: webhook server", slog.String("reason", err.Error()))
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("sync: webhooks", slog.String("listen", ln.Addr().String()))
	return nil
}
