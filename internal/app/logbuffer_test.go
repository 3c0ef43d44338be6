package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer that counts the writes it gets, safe for the flush timer.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) state() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.writes
}

func TestLogBufferHoldsRequestLinesOnly(t *testing.T) {
	out := &syncBuffer{}
	buf := NewLogBuffer(out)
	log := slog.New(BufferRequests(slog.NewTextHandler(buf, nil), buf))
	for i := range 3 {
		log.Info("request", "n", i)
	}
	if got, _ := out.state(); got != "" {
		t.Fatalf("request lines written at once: %q", got)
	}
	// Any other line goes out at once, after the lines logged before it.
	log.Warn("mirror set aside", "mirror", "eu")
	got, writes := out.state()
	if writes != 1 {
		t.Errorf("%d writes for four lines, want 1", writes)
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "n=0") || !strings.Contains(lines[3], "mirror set aside") {
		t.Errorf("lines out of order or missing:\n%s", got)
	}
	log.With("mirror", "eu").Info("mirror healthy again")
	if got, _ := out.state(); !strings.Contains(got, "mirror healthy again") {
		t.Errorf("an info line other than the request log waited in the buffer")
	}
}

func TestLogBufferFlushesWithinTheDelay(t *testing.T) {
	out := &syncBuffer{}
	buf := NewLogBuffer(out)
	log := slog.New(BufferRequests(slog.NewTextHandler(buf, nil), buf))
	start := time.Now()
	log.Info("request", "n", 1)
	for {
		if got, _ := out.state(); got != "" {
			break
		}
		if time.Since(start) > 5*FlushDelay {
			t.Fatalf("a request line still buffered after %v", time.Since(start))
		}
		time.Sleep(FlushDelay / 10)
	}
	if d := time.Since(start); d < FlushDelay/2 {
		t.Errorf("flushed after %v, before the delay", d)
	}
}

func TestLogBufferFullAndClose(t *testing.T) {
	out := &syncBuffer{}
	buf := NewLogBuffer(out)
	line := []byte(strings.Repeat("x", 999) + "\n")
	n := 3*logBufferSize/len(line) + 1
	for range n {
		if _, err := buf.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	got, writes := out.state()
	if writes < 2 || writes > 3 {
		t.Errorf("%d writes for %d lines of %d bytes, want 2 or 3", writes, n, len(line))
	}
	if len(got)%len(line) != 0 {
		t.Errorf("a line was split: %d bytes written", len(got))
	}
	big := []byte(strings.Repeat("y", logBufferSize) + "\n")
	if _, err := buf.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ = out.state()
	if len(got) != n*len(line)+len(big) || !strings.HasSuffix(got, string(big)) {
		t.Errorf("after Close: %d bytes, want %d with the big line last", len(got), n*len(line)+len(big))
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestLogBufferReportsWriteErrors(t *testing.T) {
	buf := NewLogBuffer(failWriter{})
	if _, err := buf.Write([]byte("a\n")); err != nil {
		t.Fatal(err)
	}
	if err := buf.Flush(); err == nil {
		t.Error("Flush to a failing writer: no error")
	}
	// A failed timer flush is reported by the next write.
	_, _ = buf.Write([]byte("b\n"))
	time.Sleep(3 * FlushDelay)
	if _, err := buf.Write([]byte("c\n")); err == nil {
		t.Error("the timer's failed write was not reported")
	}
}

// BenchmarkRequestLog is one request line through the text handler: written straight to the
// writer (what every request cost before), and through LogBuffer.
func BenchmarkRequestLog(b *testing.B) {
	rec := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
	rec.AddAttrs(slog.String("route", "blob"), slog.String("method", "GET"), slog.Int("status", 307),
		slog.Duration("latency", 3*time.Microsecond), slog.String("mirror", "eu-west"), slog.String("reason", "country"))
	// A file, as when the service's stderr is redirected to one: each write is a system call.
	f, err := os.Create(filepath.Join(b.TempDir(), "log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sink := &countingWriter{w: f}
	for _, tc := range []struct {
		name string
		h    func() slog.Handler
	}{
		{"direct", func() slog.Handler { return slog.NewTextHandler(sink, nil) }},
		{"buffered", func() slog.Handler {
			buf := NewLogBuffer(sink)
			return BufferRequests(slog.NewTextHandler(buf, nil), buf)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := tc.h()
			sink.writes = 0
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					_ = h.Handle(context.Background(), rec)
				}
			})
			b.ReportMetric(float64(sink.writes)/float64(b.N), "writes/op")
		})
	}
}

// countingWriter counts the writes that reach w.
type countingWriter struct {
	w      io.Writer
	mu     sync.Mutex
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.w.Write(p)
}
