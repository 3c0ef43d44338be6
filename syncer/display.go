package syncer

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// ShowBars draws p on a terminal until ctx ends: a bar for all the bytes planned so far and one
// for each copy under way, each with bytes, rate and time left. w must be a terminal (the bars
// move the cursor); elsewhere, use LogProgress.
func ShowBars(ctx context.Context, p *Progress, w io.Writer) {
	const every = 200 * time.Millisecond
	bars := mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(32), mpb.WithRefreshRate(every), mpb.ForceAutoRefresh())
	total := bars.New(0, mpb.BarStyle(), mpb.BarPriority(-1),
		mpb.PrependDecorators(decor.Name("total ", decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace)),
		mpb.AppendDecorators(decor.EwmaSpeed(decor.SizeB1024(0), "% .1f", 30, decor.WCSyncSpace), decor.Name(" left "), decor.EwmaETA(decor.ET_STYLE_GO, 30)))
	blobs := map[string]*mpb.Bar{}
	last := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	update := func() {
		s := p.Snapshot()
		now := time.Now()
		dt := now.Sub(last)
		last = now
		total.SetTotal(max(s.Total, 1), false)
		total.EwmaSetCurrent(s.Done, dt)
		seen := map[string]bool{}
		for _, b := range s.Blobs {
			seen[b.Digest] = true
			bar, ok := blobs[b.Digest]
			if !ok {
				bar = bars.New(max(b.Size, 1), mpb.BarStyle(), mpb.BarRemoveOnComplete(),
					mpb.PrependDecorators(decor.Name(shortDigest(b.Digest)+" ", decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace)),
					mpb.AppendDecorators(decor.EwmaSpeed(decor.SizeB1024(0), "% .1f", 30, decor.WCSyncSpace), decor.Name(" left "), decor.EwmaETA(decor.ET_STYLE_GO, 30)))
				blobs[b.Digest] = bar
			}
			bar.EwmaSetCurrent(b.Done, dt)
		}
		for d, bar := range blobs {
			if !seen[d] {
				bar.SetTotal(-1, true)
				delete(blobs, d)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			update()
			for _, bar := range blobs {
				bar.SetTotal(-1, true)
			}
			total.SetTotal(-1, true)
			bars.Wait()
			return
		case <-tick.C:
			update()
		}
	}
}

// LogProgress logs a line about p every `every` until ctx ends, while anything is planned:
// bytes done and planned, the rate since the last line, the time left at that rate and the
// copies under way. It is the display for a log, where bars would be noise.
func LogProgress(ctx context.Context, p *Progress, log *slog.Logger, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	prev, prevAt := p.Snapshot().Done, time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s := p.Snapshot()
			if s.Total == 0 || s.Finished == s.Queued {
				prev, prevAt = s.Done, now
				continue
			}
			rate := float64(s.Done-prev) / now.Sub(prevAt).Seconds()
			prev, prevAt = s.Done, now
			attrs := []any{
				slog.Int64("done_bytes", s.Done), slog.Int64("total_bytes", s.Total),
				slog.Int("blobs_done", s.Finished), slog.Int("blobs", s.Queued),
				slog.Int("in_flight", len(s.Blobs)), slog.Float64("bytes_per_second", float64(int64(rate))),
			}
			if rate > 0 {
				attrs = append(attrs, slog.Duration("left", time.Duration(float64(s.Total-s.Done)/rate*float64(time.Second)).Round(time.Second)))
			}
			log.Info("sync: progress", attrs...)
		}
	}
}

// shortDigest is what a bar is labelled with: enough of the digest to tell blobs apart.
func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
