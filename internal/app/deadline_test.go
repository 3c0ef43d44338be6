package app

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// coarseServer serves h the way the public listener does, with the given timeouts in place of
// the real ones, and counts the connections it has closed.
func coarseServer(t testing.TB, h http.Handler, read, write time.Duration) (addr string, closed *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed = new(atomic.Int32)
	srv := publicServerWith("", h, slog.New(slog.DiscardHandler), read)
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	go func() { _ = srv.Serve(deadlineListener{Listener: ln, writeTimeout: write}) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), closed
}

// waitClosed waits until n connections are closed, at most within.
func waitClosed(t *testing.T, closed *atomic.Int32, n int32, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for closed.Load() < n {
		if time.Since(start) > within {
			t.Fatalf("connection still open after %v", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// trickle connects to addr, writes head, then one byte every 50 ms until the test ends.
func trickle(t *testing.T, addr, head string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := io.WriteString(c, "X"); err != nil {
					return
				}
			}
		}
	}()
}

func TestCoarseDeadlinesCutSlowHeaders(t *testing.T) {
	addr, closed := coarseServer(t, http.NotFoundHandler(), 300*time.Millisecond, time.Second)
	// One header byte every 50 ms: each read makes progress, only the request's deadline ends it.
	trickle(t, addr, "GET /v2/ HTTP/1.1\r\nHost: x\r\n")
	if d := waitClosed(t, closed, 1, 3*time.Second); d < 250*time.Millisecond {
		t.Fatalf("cut off after %v, before the header timeout", d)
	}
}

func TestCoarseDeadlinesCutSlowBody(t *testing.T) {
	addr, closed := coarseServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}), 300*time.Millisecond, time.Second)
	trickle(t, addr, "GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
	waitClosed(t, closed, 1, 3*time.Second)
}

// bigAnswer writes n chunks of 64 KiB, flushing each.
func bigAnswer(n int) http.Handler {
	chunk := []byte(strings.Repeat("x", 64<<10))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range n {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
}

func TestCoarseDeadlinesCutReaderThatStops(t *testing.T) {
	const write = 400 * time.Millisecond
	addr, closed := coarseServer(t, bigAnswer(1024), time.Second, write) // 64 MiB: more than any socket buffer
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Never read: the server's writes stop making progress and its deadline ends them.
	d := waitClosed(t, closed, 1, 10*write)
	t.Logf("cut off after %v", d)
}

func TestCoarseDeadlinesKeepReaderThatProgresses(t *testing.T) {
	const write = 300 * time.Millisecond
	// 40 chunks read at one every 25 ms take a second, more than three write timeouts and the
	// header timeout: a connection whose writes progress is never cut off, whatever the answer's
	// length (nor is the request's context cancelled, as a ReadTimeout would).
	addr, closed := coarseServer(t, bigAnswer(40), 300*time.Millisecond, write)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	buf := make([]byte, 64<<10)
	total := 0
	for {
		n, err := io.ReadFull(resp.Body, buf)
		total += n
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	if took := time.Since(start); total != 40*64<<10 || took < 3*write {
		t.Fatalf("read %d bytes of %d in %v", total, 40*64<<10, took)
	}
	if total != 40*64<<10 {
		t.Fatalf("read %d bytes of %d after %v", total, 40*64<<10, time.Since(start))
	}
	// And the connection serves the next request: the deadline of the long answer is not left behind.
	time.Sleep(write)
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	if n != 40*64<<10 || closed.Load() != 0 {
		t.Fatalf("second answer: %d bytes, %d connections closed", n, closed.Load())
	}
}

func TestPublicServerTimeouts(t *testing.T) {
	srv := newPublicServer("127.0.0.1:0", http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	if srv.ReadHeaderTimeout != readHeaderTimeout || srv.ReadTimeout != 0 || srv.WriteTimeout != 0 || srv.IdleTimeout != idleTimeout {
		t.Fatalf("timeouts: header %v, read %v, write %v, idle %v", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
	if l, ok := publicListener(nil).(deadlineListener); !ok || l.writeTimeout != writeTimeout {
		t.Fatalf("public listener: %#v", publicListener(nil))
	}
}

// BenchmarkServerDeadlines is keep-alive requests on one loopback connection: net/http's own
// timeouts (moving the deadlines five times per request) against the public listener's coarse
// ones. Client and server share the CPU, so the difference is diluted.
func BenchmarkServerDeadlines(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Location"] = []string{"https://example.com/"}
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	run := func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req := []byte("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	b.Run("net-http-timeouts", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := NewServer("", h, slog.New(slog.DiscardHandler))
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		run(b, ln.Addr().String())
	})
	b.Run("coarse", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := newPublicServer("", h, slog.New(slog.DiscardHandler))
		go func() { _ = srv.Serve(publicListener(ln)) }()
		defer srv.Close()
		run(b, ln.Addr().String())
	})
}
