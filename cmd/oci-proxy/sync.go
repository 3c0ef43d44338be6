package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

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
	partSize := sizeFlag(app.DefaultPartSize)
	fs.Var(&partSize, "part-size", "size of an S3 part (5MiB to 5GiB); a smaller blob is held in memory and sent in one request")
	var gcsChunk sizeFlag
	fs.Var(&gcsChunk, "gcs-chunk-size", "send blobs to GCS in chunks of this size, each held in memory for retries; 0: one streamed request")
	gcsPiece := sizeFlag(app.DefaultGCSPieceSize)
	fs.Var(&gcsPiece, "gcs-piece-size", "send larger blobs to GCS in pieces of this size, composed at the end, that a later run continues (1MiB to 5GiB); 0: one upload")
	fs.IntVar(&opts.Parallel, "parallel", app.DefaultParallel, "parts (S3) or pieces (GCS) of one blob in flight at once")
	fs.DurationVar(&opts.Stall, "stall", app.DefaultStall, "fail a copy that moves no byte for this long")
	quiet := fs.Bool("quiet", false, "show no progress, only the report")
	fs.DurationVar(&opts.ProgressEvery, "progress-every", app.DefaultProgressEvery, "without a terminal, log progress this often")
	fs.BoolVar(&opts.JSON, "json", false, "print reports (and, without a terminal, progress lines) as JSON")
	listen := fs.String("listen", "", "serve the push webhooks (POST /webhooks/registry, /webhooks/pubsub) on ADDR")
	fs.DurationVar(&opts.StopTimeout, "stop-timeout", app.DefaultStopTimeout, "on SIGTERM, how long copies in flight may take to finish")
	var demandFrom listFlag
	fs.Var(&demandFrom, "demand", "fill the `sync: demand` mirrors from this demand source: prometheus=URL, or a proxy's /_/demand URL (repeat for several replicas)")
	fs.Float64Var(&opts.DemandMin, "demand-min", app.DefaultDemandMin, "with --demand: misses at a mirror that make a repository copied there")
	fs.DurationVar(&opts.DemandWindow, "demand-window", app.DefaultDemandWindow, "with --demand: the window misses are counted over (Prometheus; a /_/demand source has decaying counts)")
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
	if partSize < 5<<20 || partSize > 5<<30 {
		fmt.Fprintf(stderr, "oci-proxy sync: --part-size must be between 5MiB and 5GiB (S3's limits)\n")
		return errUsage
	}
	opts.PartSize = int64(partSize)
	if gcsChunk < 0 || gcsChunk > 5<<30 {
		fmt.Fprintf(stderr, "oci-proxy sync: --gcs-chunk-size must be between 0 and 5GiB\n")
		return errUsage
	}
	opts.GCSChunkSize = int64(gcsChunk)
	if gcsPiece != 0 && (gcsPiece < 1<<20 || gcsPiece > 5<<30) {
		fmt.Fprintf(stderr, "oci-proxy sync: --gcs-piece-size must be 0 or between 1MiB and 5GiB\n")
		return errUsage
	}
	opts.GCSPieceSize = int64(gcsPiece)
	if gcsPiece == 0 {
		opts.GCSPieceSize = -1 // none (0 is the default for NewSync)
	}
	if opts.Parallel < 1 {
		fmt.Fprintf(stderr, "oci-proxy sync: --parallel must be at least 1\n")
		return errUsage
	}
	if opts.Stall < time.Second {
		fmt.Fprintf(stderr, "oci-proxy sync: --stall must be at least 1s\n")
		return errUsage
	}
	if opts.ProgressEvery < time.Second {
		fmt.Fprintf(stderr, "oci-proxy sync: --progress-every must be at least 1s\n")
		return errUsage
	}
	if opts.DemandMin <= 0 || opts.DemandWindow < time.Second {
		fmt.Fprintf(stderr, "oci-proxy sync: --demand-min must be positive and --demand-window at least 1s\n")
		return errUsage
	}
	if len(demandFrom) > 0 && *listen != "" {
		fmt.Fprintf(stderr, "oci-proxy sync: --demand fills the demand mirrors by rounds; run the push webhooks (--listen) in a sync of their own\n")
		return errUsage
	}
	if len(demandFrom) > 0 {
		var err error
		if opts.Demand, err = app.ParseDemandSources(demandFrom); err != nil {
			fmt.Fprintf(stderr, "oci-proxy sync: %v\n", err)
			return errUsage
		}
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	opts.Logger, opts.Reports = log, stdout
	switch {
	case *quiet:
		opts.Progress = app.ProgressNone
	case isTerminal(stderr):
		opts.Progress, opts.ProgressOut = app.ProgressBars, stderr
	default:
		opts.Progress = app.ProgressLog
		if opts.JSON {
			opts.ProgressLogger = slog.New(slog.NewJSONHandler(stderr, nil))
		}
	}
	cfg, err := app.LoadConfig(*cfgPath)
	if err != nil {
		return err
	}
	// Nearly all of what a copy allocates is I/O buffers, reused from part to part and holding
	// no pointers, which a collection does not scan: collecting at a quarter of growth rather
	// than the default doubling costs little and keeps the process near what it really holds.
	// GOGC, when set, is the operator's choice.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
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

// isTerminal reports whether w is a terminal, where progress is drawn as bars.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// sizeFlag is a byte count given as a number with an optional binary unit: 8MiB, 16M, 1GiB,
// 5242880.
type sizeFlag int64

func (s *sizeFlag) String() string {
	switch n := int64(*s); {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	default:
		return strconv.FormatInt(n, 10)
	}
}

func (s *sizeFlag) Set(v string) error {
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size such as 8MiB", v)
	}
	*s = sizeFlag(n * mult)
	return nil
}

// listFlag collects the values of a flag given several times.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ", ") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}
