package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/app"
)

// syncCmd copies blobs from the upstream into the writable mirrors: once, printing the report
// and failing when anything failed, or, with --every and/or --listen, at start, on a schedule and
// when the registry announces a push, until SIGINT or SIGTERM (then the copies in flight finish).
func syncCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sync", stderr)
	cfgPath := fs.String("config", "config.yaml", "configuration file (YAML)")
	var opts app.SyncOptions
	fs.BoolVar(&opts.DryRun, "dry-run", false, "only report what would be copied")
	every := fs.Duration("every", 0, "run at start and then every DURATION (with up to 10% jitter) until SIGTERM; 0: once")
	fs.IntVar(&opts.Concurrency, "concurrency", app.DefaultSyncConcurrency, "blobs copied at once")
	fs.BoolVar(&opts.JSON, "json", false, "print reports as JSON")
	listen := fs.String("listen", "", "serve the push webhooks (POST /webhooks/registry, /webhooks/pubsub) on ADDR")
	fs.DurationVar(&opts.StopTimeout, "stop-timeout", app.DefaultStopTimeout, "on SIGTERM, how long copies in flight may take to finish")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *every < 0 || (*every > 0 && *every < time.Second) {
		fmt.Fprintf(stderr, "oci-proxy sync: --every must be at least 1s\n")
		return errUsage
	}
	if opts.Concurrency < 1 {
		fmt.Fprintf(stderr, "oci-proxy sync: --concurrency must be at least 1\n")
		return errUsage
	}
	if opts.StopTimeout <= 0 {
		fmt.Fprintf(stderr, "oci-proxy sync: --stop-timeout must be positive\n")
		return errUsage
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	opts.Logger, opts.Reports = log, stdout
	cfg, err := app.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := app.NewSync(ctx, cfg, opts)
	if err != nil {
		return err
	}
	defer s.Close()
	if *every == 0 && *listen == "" {
		return s.Once(ctx)
	}
	return s.Run(ctx, *every, *listen)
}
