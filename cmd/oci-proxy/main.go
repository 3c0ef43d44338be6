// Command oci-proxy gives container images a domain of their own: it redirects registry clients to
// the upstream registry for manifests and to the nearest mirror for blobs.
//
//	oci-proxy serve    --config config.yaml [--listen :8080] [--log-format text|json]
//	oci-proxy validate --config config.yaml
//	oci-proxy resolve  --config config.yaml --ip 81.2.69.142 [--digest sha256:...] [--json]
//	oci-proxy sync     --config config.yaml [--dry-run] [--every 1h] [--concurrency 4] [--json] [--demand prometheus=URL]
//	oci-proxy demand   --config config.yaml --from prometheus=URL [--window 24h] [--json]
//	oci-proxy version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/happy-turtle/oci-proxy/internal/app"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=... -X main.date=..." by
// scripts/build.sh and scripts/release.sh, from the git tag at HEAD. A binary built without them
// (go install, a plain go build) takes what the go command recorded instead: see buildInfo.
var (
	version string
	commit  string
	date    string
)

// buildInfo is the version, commit and build date of this binary: the -ldflags values where set,
// else those the go command stamps into every binary it builds: the module version of
// `go install module@v1.2.3` (or of a go build at a clean tagged commit) and the VCS revision and
// commit time of a build in a git checkout. The version is given without its "v", as the image
// tags are.
func buildInfo() app.BuildInfo {
	info := app.BuildInfo{Version: version, Commit: commit, Date: date}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; info.Version == "" && v != "" && v != "(devel)" {
			info.Version = v
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && info.Commit == "":
				info.Commit = s.Value
			case s.Key == "vcs.time" && info.Date == "":
				info.Date = s.Value
			}
		}
	}
	if v, ok := strings.CutPrefix(info.Version, "v"); ok && v != "" && v[0] >= '0' && v[0] <= '9' {
		info.Version = v
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	if info.Date == "" {
		info.Date = "unknown"
	}
	return info
}

const usage = `oci-proxy gives container images a domain of their own.

Usage:
  oci-proxy serve    --config FILE [--listen ADDR] [--log-format text|json] [--log-level LEVEL]
                     [--reload-interval 5s] (SIGHUP also reloads) [--shutdown-grace 5s]
  oci-proxy validate --config FILE
  oci-proxy resolve  --config FILE --ip ADDR [--name REPOSITORY] [--digest DIGEST] [--method GET|HEAD] [--json]
  oci-proxy sync     --config FILE [--dry-run] [--every DURATION] [--concurrency N] [--json]
                     [--demand prometheus=URL|URL ... [--demand-min 10] [--demand-window 24h]]
                     (copies blobs from the upstream into the s3 and gcs mirrors; exits 1 on failures;
                     with --demand, into the sync: demand mirrors what their clients missed)
  oci-proxy demand   --config FILE --from prometheus=URL|URL ... [--window 24h] [--json]
                     (blob requests served and missed per mirror, distances per client continent,
                     and where a new mirror would shorten them most)
  oci-proxy version

Environment:
  UpstreamRegistry  upstream registry URL (with its /v2/ path); overrides the file's upstream and
                    is enough on its own to run without a config file
  PORT              port to listen on when --listen is not given
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage means the command line was wrong; the message has been printed.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "validate":
		err = validate(args[1:], stdout, stderr)
	case "resolve":
		err = resolve(args[1:], stdout, stderr)
	case "sync":
		err = syncCmd(args[1:], stdout, stderr)
	case "demand":
		err = demandCmd(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		info := buildInfo()
		fmt.Fprintf(stdout, "oci-proxy %s (commit %s, built %s, %s)\n", info.Version, info.Commit, info.Date, runtime.Version())
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "oci-proxy: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "oci-proxy: %v\n", err)
		return 1
	}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "oci-proxy %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

func serve(args []string, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	listen := fs.String("listen", "", "address to listen on (overrides the file and $PORT)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	reloadEvery := fs.Duration("reload-interval", app.DefaultReloadInterval, "how often to check the config file and the files it names for changes (0: only on SIGHUP)")
	grace := fs.Duration("shutdown-grace", app.DefaultShutdownGrace, "on SIGTERM, how long to go on serving with /readyz answering 503 before in-flight requests finish and the process exits")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *grace < 0 {
		fmt.Fprintf(stderr, "oci-proxy serve: --shutdown-grace must not be negative\n")
		return errUsage
	}
	// Request lines wait up to app.FlushDelay to go out with their neighbours; other lines are
	// written at once.
	logBuf := app.NewLogBuffer(stderr)
	defer logBuf.Close()
	log, err := newLogger(logBuf, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	log = slog.New(app.BufferRequests(log.Handler(), logBuf))
	cfg, err := app.LoadServeConfig(*cfgPath, *listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	svc, err := app.New(ctx, cfg, buildInfo(), log)
	if err != nil {
		return err
	}
	defer svc.Close()
	svc.SetShutdownGrace(*grace)
	if *cfgPath != "" {
		svc.Watch(*cfgPath, *listen, *reloadEvery)
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					_ = svc.Reload(ctx) // logged by Reload; the running configuration stays on error
				}
			}
		}()
	}
	return svc.Run(ctx)
}

func validate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	cfgPath := fs.String("config", "config.yaml", "configuration file (YAML)")
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return app.Validate(ctx, *cfgPath, stdout)
}

func resolve(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("resolve", stderr)
	cfgPath := fs.String("config", "config.yaml", "configuration file (YAML)")
	var q app.ResolveQuery
	fs.StringVar(&q.IP, "ip", "", "client address to explain (required)")
	fs.StringVar(&q.Name, "name", "", "repository name; also says which route and mode it takes (optional)")
	fs.StringVar(&q.Digest, "digest", "", "blob digest; checks which mirrors hold it (optional)")
	fs.StringVar(&q.Method, "method", "GET", "GET or HEAD")
	fs.BoolVar(&q.JSON, "json", false, "print JSON instead of text")
	if err := parse(fs, args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := app.Resolve(ctx, *cfgPath, q, stdout)
	if errors.Is(err, app.ErrInput) {
		fmt.Fprintf(stderr, "oci-proxy resolve: %v\n", err)
		return errUsage
	}
	return err
}

func demandCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demand", stderr)
	cfgPath := fs.String("config", "config.yaml", "configuration file (YAML)")
	var q app.DemandQuery
	var from listFlag
	fs.Var(&from, "from", "demand source: prometheus=URL, or a proxy's /_/demand URL (repeat for several replicas)")
	fs.DurationVar(&q.Window, "window", app.DefaultDemandWindow, "the window a Prometheus source is read over")
	fs.BoolVar(&q.JSON, "json", false, "print JSON instead of text")
	if err := parse(fs, args); err != nil {
		return err
	}
	if q.Window < time.Second {
		fmt.Fprintf(stderr, "oci-proxy demand: --window must be at least 1s\n")
		return errUsage
	}
	q.From = from
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := app.Demand(ctx, *cfgPath, q, stdout)
	if errors.Is(err, app.ErrInput) {
		fmt.Fprintf(stderr, "oci-proxy demand: %v\n", err)
		return errUsage
	}
	return err
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
}
