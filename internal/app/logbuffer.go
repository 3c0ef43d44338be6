package app

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// LogBuffer holds the request log's lines for a moment so that many go out in one write: one
// write(2) per request, under the handler's lock, was the largest cost of a redirect with the
// request log on (docs/BENCHMARKS.md). Lines other than request lines are written at once (BufferRequests).
//
// Lines are written in order, whole, at the latest FlushDelay after they were logged, or when
// the buffer is full; Close writes the rest. A process killed with SIGKILL loses at most the
// request lines of the last FlushDelay.
type LogBuffer struct {
	mu    sync.Mutex
	w     io.Writer
	buf   []byte
	timer *time.Timer // armed while buf holds lines
	err   error       // the timer's last write error, reported by the next Write
}

const (
	// FlushDelay is how long a request line may wait: well under what a person reading the log
	// or a log shipper notices, long enough for hundreds of lines at a busy replica.
	FlushDelay = 100 * time.Millisecond
	// logBufferSize is where a write goes out before the delay; the buffer starts small and
	// grows to it only under load.
	logBufferSize = 32 << 10
)

// NewLogBuffer returns a LogBuffer writing to w.
func NewLogBuffer(w io.Writer) *LogBuffer {
	b := &LogBuffer{w: w}
	b.timer = time.AfterFunc(time.Hour, b.flushLater)
	b.timer.Stop()
	return b
}

// Write buffers p, which holds whole lines (a slog handler writes one record per call).
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.err; err != nil {
		b.err = nil
		return 0, err
	}
	if len(b.buf)+len(p) > logBufferSize {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= logBufferSize {
			return b.w.Write(p)
		}
	}
	if len(b.buf) == 0 {
		b.timer.Reset(FlushDelay)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes the buffered lines now.
func (b *LogBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *LogBuffer) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	b.timer.Stop()
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// flushLater is the timer's flush; nobody waits for it, so its error goes to the next Write.
func (b *LogBuffer) flushLater() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.flushLocked(); err != nil {
		b.err = err
	}
}

// Close writes the buffered lines; later writes still go through the buffer.
func (b *LogBuffer) Close() error { return b.Flush() }

// BufferRequests wraps h, which writes to buf, so that only the request log's lines (message
// "request" at Info, from the redirector) wait in buf: any other record, and every warning or
// error, is written at once together with what was buffered before it.
func BufferRequests(h slog.Handler, buf *LogBuffer) slog.Handler {
	return requestBuffering{h: h, buf: buf}
}

type requestBuffering struct {
	h   slog.Handler
	buf *LogBuffer
}

func (r requestBuffering) Enabled(ctx context.Context, l slog.Level) bool {
	return r.h.Enabled(ctx, l)
}

func (r requestBuffering) Handle(ctx context.Context, rec slog.Record) error {
	err := r.h.Handle(ctx, rec)
	if rec.Level != slog.LevelInfo || rec.Message != "request" {
		if ferr := r.buf.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (r requestBuffering) WithAttrs(as []slog.Attr) slog.Handler {
	return requestBuffering{h: r.h.WithAttrs(as), buf: r.buf}
}

func (r requestBuffering) WithGroup(name string) slog.Handler {
	return requestBuffering{h: r.h.WithGroup(name), buf: r.buf}
}
