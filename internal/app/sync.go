package app

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
	"sync"
	"time"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/demand"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/mirrors/gcs"
	"github.com/happy-turtle/oci-proxy/mirrors/s3"
	"github.com/happy-turtle/oci-proxy/syncer"
	"github.com/happy-turtle/oci-proxy/syncer/webhook"
	"github.com/happy-turtle/oci-proxy/upstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// SyncOptions configure a Sync. The zero value copies with syncer.DefaultConcurrency, prints
// text reports to nowhere, logs nothing and shows no progress.
type SyncOptions struct {
	DryRun      bool
	Concurrency int // blobs copied at once; 0: syncer.DefaultConcurrency
	// PartSize is the size of an S3 part. 0: DefaultPartSize.
	PartSize int64
	// GCSChunkSize, when set, sends blobs to GCS mirrors in chunks of this size, each held in
	// memory so that it can be sent again after a transient error. 0: each blob in one
	// streamed request, which holds none of it.
	GCSChunkSize int64
	// GCSPieceSize, when set, sends blobs larger than it to GCS mirrors in pieces of this
	// size, temporary objects composed into the blob at the end, so that a later run continues
	// an upload cut off. 0: one upload per blob, started again after an interruption. Zero in
	// a SyncOptions given to NewSync is DefaultGCSPieceSize; negative is none.
	GCSPieceSize int64
	// Parallel is how many parts of one blob go to an S3 mirror at once. 0: DefaultParallel.
	Parallel int
	// Stall ends a copy that has moved no byte for this long. 0: syncer.DefaultStall.
	Stall time.Duration
	// Progress is how copies are shown while they run: ProgressNone, ProgressBars on
	// ProgressOut (a terminal), or ProgressLog, a line every ProgressEvery to ProgressLogger
	// (Logger when nil).
	Progress       ProgressMode
	ProgressOut    io.Writer
	ProgressLogger *slog.Logger
	ProgressEvery  time.Duration // 0: DefaultProgressEvery
	// Reports receives one report per run, as text or (JSON) one JSON object per line.
	Reports io.Writer
	JSON    bool
	Logger  *slog.Logger
	// StopTimeout bounds how long a stopping daemon waits for the copies in flight before it
	// cuts them off. 0: DefaultStopTimeout.
	StopTimeout time.Duration
	// Demand, when set, makes each run fill the `sync: demand` mirrors from these sources
	// (DemandReport) instead of copying everything into the others. DemandMin (0:
	// DefaultDemandMin) misses over DemandWindow (0: DefaultDemandWindow) make a repository
	// copied into a mirror.
	Demand       []demand.Source
	DemandMin    float64
	DemandWindow time.Duration
}

// DefaultSyncConcurrency is how many blobs `oci-proxy sync` copies at once.
const DefaultSyncConcurrency = syncer.DefaultConcurrency

// DefaultPartSize is the S3 part size of `oci-proxy sync`: S3's 5 MiB minimum rounded up to a
// power of two, large enough that a part's request overhead is small and that blobs of up to
// 78 GiB fit S3's 10,000 parts (larger ones get larger parts), small enough that a part resumed
// from an earlier run, read into memory to be checked, stays small.
const DefaultPartSize = s3.DefaultPartSize

// DefaultGCSPieceSize is the size of the pieces `oci-proxy sync` sends larger blobs to GCS in:
// large enough that a piece's request, object and share of the composes cost little beside its
// bytes (a 1 GiB layer is 16 pieces and one compose; 4 GiB, 64 pieces and 3 composes), small
// enough that an interrupted upload loses little. Pieces are streamed: their size costs no
// memory.
const DefaultGCSPieceSize = 64 << 20

// DefaultParallel is how many parts of one blob go to an S3 mirror at once: two keep a
// connection busy while the other part is acknowledged, and the blobs copied at once
// (--concurrency) add their own.
const DefaultParallel = s3.DefaultParallelParts

// DefaultStall is how long a copy of `oci-proxy sync` may move no byte before it fails.
const DefaultStall = syncer.DefaultStall

// DefaultProgressEvery is how often progress is logged without a terminal.
const DefaultProgressEvery = 10 * time.Second

// ProgressMode is how a Sync shows its copies while they run.
type ProgressMode int

const (
	ProgressNone ProgressMode = iota // nothing but the report
	ProgressBars                     // bars on a terminal
	ProgressLog                      // periodic log lines
)

// DefaultStopTimeout is how long `oci-proxy sync` lets copies in flight finish after SIGTERM: long
// enough for a large layer, shorter than the patience of most process managers' kill timers
// (Kubernetes' default grace is 30 s; set terminationGracePeriodSeconds to match).
const DefaultStopTimeout = 5 * time.Minute

// Sync is `oci-proxy sync`: the syncer built from a configuration, run once or as a daemon.
type Sync struct {
	cfg      *config.Config
	ups      *upstream.Table
	syncer   *syncer.Syncer
	progress *syncer.Progress // nil: none shown
	closer   io.Closer
	opts     SyncOptions
	log      *slog.Logger
	reports  sync.Mutex  // one report printed at a time
	demand   *demandSync // nil: plain sync
}

// NewSync builds the syncer for cfg: its writable mirrors as targets, its upstream routes as
// sources. Close releases the backends.
func NewSync(ctx context.Context, cfg *config.Config, opts SyncOptions) (*Sync, error) {
	if len(cfg.Sync.Repositories) == 0 {
		return nil, fmt.Errorf("%s: sync.repositories is empty: nothing to copy", cfg.File)
	}
	ups, err := UpstreamTable(cfg)
	if err != nil {
		return nil, err
	}
	targets, closer, err := Writers(ctx, cfg)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Reports == nil {
		opts.Reports = io.Discard
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	clients, err := newUpstreamClients(cfg, log)
	if err != nil {
		closer.Close()
		return nil, err
	}
	if opts.Parallel <= 0 {
		opts.Parallel = DefaultParallel
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = DefaultProgressEvery
	}
	if opts.GCSPieceSize == 0 {
		opts.GCSPieceSize = DefaultGCSPieceSize
	}
	for i := range targets {
		targets[i].Uploader = uploaderOf(targets[i].Writer, targets[i].Prefix, opts)
	}
	var progress *syncer.Progress
	if opts.Progress != ProgressNone {
		progress = &syncer.Progress{}
	}
	sopts := syncer.Options{
		Concurrency: opts.Concurrency, DryRun: opts.DryRun, Logger: log, Stall: opts.Stall, Progress: progress,
		// The upstream clients authenticate (no Keychain: go-containerregistry's own token flow
		// must not).
		Transport: clients,
	}
	all, byDemand := splitTargets(cfg, targets)
	s := &Sync{cfg: cfg, ups: ups, syncer: syncer.New(syncPlan(cfg, all), ups, all, sopts), progress: progress, closer: closeAll{closer, clients}, opts: opts, log: log}
	if len(opts.Demand) > 0 {
		if len(byDemand) == 0 {
			s.Close()
			return nil, fmt.Errorf("%s: %w", cfg.File, errNoDemandMirror)
		}
		d := &demandSync{sources: opts.Demand, min: opts.DemandMin, window: opts.DemandWindow, targets: map[string]syncer.Target{}, repos: map[string]syncer.Repository{},
			newSyncer: func(p syncer.Plan, ts []syncer.Target) *syncer.Syncer { return syncer.New(p, ups, ts, sopts) }}
		if d.min <= 0 {
			d.min = DefaultDemandMin
		}
		if d.window <= 0 {
			d.window = DefaultDemandWindow
		}
		for _, t := range byDemand {
			d.mirrors = append(d.mirrors, t.Name)
			d.targets[t.Name] = t
		}
		for _, r := range cfg.Sync.Repositories {
			d.names = append(d.names, r.Name)
			d.repos[r.Name] = syncer.Repository{Name: r.Name, Tags: r.Tags}
		}
		s.demand = d
	}
	return s, nil
}

// uploaderOf is the syncer's Uploader for a mirror's writer: the S3 and GCS backends' own
// uploads, tuned by opts, which report progress and (S3) resume. Other writers have none and
// are written with Put.
func uploaderOf(w mirrors.Writer, prefix string, opts SyncOptions) syncer.Uploader {
	switch b := w.(type) {
	case *s3.Backend:
		return s3Uploader{b: b, o: s3.UploadOptions{PartSize: opts.PartSize, Parallel: opts.Parallel, Resume: true}}
	case *gcs.Backend:
		return gcsUploader{b: b, o: gcs.UploadOptions{
			ChunkSize: int(opts.GCSChunkSize), PieceSize: max(opts.GCSPieceSize, 0),
			TempPrefix: prefix + gcsUploadsDir, Parallel: opts.Parallel, Resume: true,
		}}
	}
	return nil
}

type s3Uploader struct {
	b *s3.Backend
	o s3.UploadOptions
}

func (u s3Uploader) Upload(ctx context.Context, key string, body io.Reader, size int64, progress func(int64)) (int64, error) {
	o := u.o
	o.Progress = progress
	res, err := u.b.Upload(ctx, key, body, size, o)
	return res.Resumed, err
}

type gcsUploader struct {
	b *gcs.Backend
	o gcs.UploadOptions
}

func (u gcsUploader) Upload(ctx context.Context, key string, body io.Reader, size int64, progress func(int64)) (int64, error) {
	o := u.o
	o.Progress = progress
	return u.b.Upload(ctx, key, body, size, o)
}

// gcsUploadsDir is where, under a GCS mirror's prefix, the pieces of blobs being uploaded go
// (see docs/SYNC.md for the lifecycle rule that removes those of uploads never finished).
const gcsUploadsDir = "uploads/"

// showProgress displays the copies as opts say until ctx ends, and returns a function that
// stops the display and waits for it to clear.
func (s *Sync) showProgress(ctx context.Context) (stop func()) {
	if s.progress == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		switch s.opts.Progress {
		case ProgressBars:
			syncer.ShowBars(ctx, s.progress, s.opts.ProgressOut)
		case ProgressLog:
			log := s.opts.ProgressLogger
			if log == nil {
				log = s.log
			}
			syncer.LogProgress(ctx, s.progress, log, s.opts.ProgressEvery)
		}
	}()
	return func() { cancel(); <-done }
}

// Close releases the mirrors' clients.
func (s *Sync) Close() error { return s.closer.Close() }

// report is what a run printed: a plain sync's or a demand round's.
type report interface {
	WriteText(io.Writer) error
	Failures() int
}

func (s *Sync) show(rep report) {
	s.reports.Lock()
	defer s.reports.Unlock()
	var err error
	if s.opts.JSON {
		err = json.NewEncoder(s.opts.Reports).Encode(rep)
	} else {
		err = rep.WriteText(s.opts.Reports)
	}
	if err != nil {
		s.log.Error("sync: print report", slog.String("err", err.Error()))
	}
}

// all is one run: every repository into the `sync: all` mirrors or, with Demand, a demand round.
func (s *Sync) all(ctx context.Context) (report, error) {
	if s.demand != nil {
		return s.demand.round(ctx)
	}
	return s.syncer.All(ctx)
}

// Once copies every configured repository once and prints the report. The error says how many
// copies failed, if any did. When ctx ends (SIGTERM), no new copy starts and the copies under way
// finish, for up to StopTimeout.
func (s *Sync) Once(ctx context.Context) error {
	life := newLifecycle(ctx)
	var (
		rep report
		err error
	)
	finished := make(chan struct{})
	stopProgress := s.showProgress(context.WithoutCancel(ctx))
	life.Go(func(work context.Context) {
		defer close(finished)
		rep, err = s.all(syncer.WithStop(work, ctx.Done()))
	})
	select {
	case <-finished:
	case <-ctx.Done():
		s.log.Info("sync: stopping; waiting for copies in flight", slog.Duration("timeout", s.opts.StopTimeout))
	}
	if !life.Stop(s.opts.StopTimeout) {
		s.log.Warn("sync: copies cut off after the stop timeout", slog.Duration("timeout", s.opts.StopTimeout))
	}
	stopProgress()
	s.show(rep)
	if err != nil {
		return err
	}
	if n := rep.Failures(); n > 0 {
		return fmt.Errorf("sync: %d failures", n)
	}
	return nil
}

// Run is the sync daemon: a full run at start, then one every `every` (0: none) and one for each
// push announced to the webhooks on listen ("": none). It returns when ctx ends, after the
// webhook server has stopped and the copies in flight have finished (or StopTimeout has passed,
// when they are cut off); a push announced but not started by then is left for the next run.
func (s *Sync) Run(ctx context.Context, every time.Duration, listen string) error {
	life := newLifecycle(ctx)
	var srv *http.Server
	if listen != "" {
		var err error
		if srv, err = s.startWebhooks(life, listen); err != nil {
			life.cancelWork()
			return err
		}
	}
	defer s.showProgress(life.work)()
	life.Go(func(work context.Context) { s.schedule(life.stopping, work, every) })
	<-ctx.Done()
	s.log.Info("sync: stopping; waiting for copies in flight", slog.Duration("timeout", s.opts.StopTimeout))
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := srv.Shutdown(sctx); err != nil {
			s.log.Warn("sync: webhook server shutdown", slog.String("err", err.Error()))
		}
		cancel()
	}
	if !life.Stop(s.opts.StopTimeout) {
		s.log.Warn("sync: copies cut off after the stop timeout", slog.Duration("timeout", s.opts.StopTimeout))
	}
	return nil
}

// schedule runs All at once and then every `every` until stopping ends. Copies run on work,
// which outlives stopping so that a run under way finishes.
func (s *Sync) schedule(stopping, work context.Context, every time.Duration) {
	for {
		rep, err := s.all(syncer.WithStop(work, stopping.Done()))
		if work.Err() != nil {
			return
		}
		s.show(rep)
		if err != nil {
			s.log.Error("sync: run failed", slog.String("err", err.Error()))
		}
		if every == 0 {
			return // webhooks only: one full run to catch up, then pushes drive the copies
		}
		// Jitter keeps replicas started together from hitting the upstream together.
		wait := every + rand.N(every/10+1)
		s.log.Info("sync: next run", slog.Duration("in", wait), slog.Int("failures", rep.Failures()))
		select {
		case <-stopping.Done():
			return
		case <-time.After(wait):
		}
	}
}

// startWebhooks serves the push webhooks on addr: each announced push is queued and copied by a
// few workers, so that a registry's retries and bursts cost one copy each.
func (s *Sync) startWebhooks(life *lifecycle, addr string) (*http.Server, error) {
	if s.cfg.Sync.Webhook.TokenFile == "" {
		return nil, fmt.Errorf("%s: sync.webhook.token_file is required with --listen: every event must carry the token", s.cfg.File)
	}
	token, err := webhook.ReadTokenFile(s.cfg.Sync.Webhook.TokenFile)
	if err != nil {
		return nil, err
	}
	workers := s.opts.Concurrency
	if workers <= 0 {
		workers = syncer.DefaultConcurrency
	}
	// A push's copy runs on the work context, which outlives the queue's: see lifecycle.
	q := webhook.NewQueue(func(_ context.Context, p webhook.Push) {
		rep, err := s.syncer.RefAt(syncer.WithStop(life.work, life.stopping.Done()), p.Repo, p.Ref, p.Digest)
		if err != nil {
			s.log.Error("sync: push failed", slog.String("push", p.String()), slog.String("err", err.Error()))
		}
		s.show(rep)
	}, workers, webhook.QueueLogger(s.log))
	hooks, err := webhook.NewHandler(webhook.Options{Token: token, Upstream: s.ups, Trigger: q.Trigger, Logger: s.log})
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "oci_proxy_sync_pushes_dropped_total",
		Help: "Pushes announced to the webhooks that the full sync queue refused (answered 503 for the sender to retry).",
	}, func() float64 { return float64(q.Dropped()) }))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle(webhook.RegistryPath, hooks)
	mux.Handle(webhook.PubSubPath, hooks)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := NewServer(addr, mux, s.log)
	// The queue takes no new push once stopping ends; the runs it started go on, on work.
	life.Go(func(context.Context) { q.Run(life.stopping) })
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("sync: webhook server", slog.String("err", err.Error()))
		}
	}()
	s.log.Info("sync: webhooks", slog.String("listen", ln.Addr().String()))
	return srv, nil
}

// lifecycle separates "stop starting things" from "stop what runs": stopping ends with the
// parent context, work only when Stop gives up waiting, so that a copy in flight at SIGTERM
// finishes instead of leaving a half-written upload behind.
type lifecycle struct {
	stopping   context.Context
	work       context.Context
	cancelWork context.CancelFunc
	wg         sync.WaitGroup
}

func newLifecycle(parent context.Context) *lifecycle {
	work, cancel := context.WithCancel(context.WithoutCancel(parent))
	return &lifecycle{stopping: parent, work: work, cancelWork: cancel}
}

// Go runs f with the work context; Stop waits for it.
func (l *lifecycle) Go(f func(work context.Context)) {
	l.wg.Go(func() { f(l.work) })
}

// Stop waits up to timeout for everything started with Go, then cancels the work context and
// waits for the rest. It reports whether everything finished in time. Call it once stopping has
// ended.
func (l *lifecycle) Stop(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		l.cancelWork()
		return true
	case <-t.C:
		l.cancelWork()
		<-done
		return false
	}
}
