package app

import (
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// The public listener's deadlines. With ReadTimeout and WriteTimeout set (NewServer), net/http
// moves a connection's deadlines five times per request (idle, header, whole request, write, and
// clearing the write deadline), and each move to a new time re-arms a runtime timer: together
// about 5% of the CPU of a redirect on this service. The public listener bounds the same things
// with fewer moves:
//
//   - Headers: ReadHeaderTimeout, as before. Slowloris (headers sent a byte at a time) is cut off
//     10 s after the request began.
//   - Bodies: a request that has one gets a read deadline of the same length from bodyDeadline. A
//     read-only registry answers them at once (405 or the like), and net/http then reads up to
//     256 KiB of what is left; that read is what a client trickling a body would hold open.
//     Requests without a body (all but a handful) need no such deadline, and no ReadTimeout is
//     set: it would also cut a handler's background read, cancelling the request context of any
//     answer that takes longer (proxy mode's streamed blobs).
//   - Writes: the connection sets its own write deadline before a write, only when less than half
//     of writeTimeout is left of the one in place (deadlineConn). A write that makes no progress
//     (a client that stops reading while answers fill the socket buffers) is cut off after
//     writeTimeout/2 to writeTimeout, as net/http's WriteTimeout would; a busy keep-alive
//     connection re-arms that timer a few times a minute instead of twice per request. Proxy
//     mode's deadlines (http.ResponseController) pass through and count as the one in place.
//   - Idle connections: IdleTimeout, as before.

// bodyDeadline gives a request with a body read seconds to send it all.
func bodyDeadline(h http.Handler, read time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(read))
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineListener wraps every accepted connection in a deadlineConn.
type deadlineListener struct {
	net.Listener
	writeTimeout time.Duration
}

func (l deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &deadlineConn{Conn: c, writeTimeout: int64(l.writeTimeout)}, nil
}

// deadlineConn is a connection that keeps its write deadline coarse and skips clearing a read
// deadline that is not set. net/http uses a connection from one goroutine at a time (the
// background read only reads); the atomics make a deadline set from elsewhere safe all the same.
type deadlineConn struct {
	net.Conn
	writeTimeout int64        // nanoseconds
	wUntil       atomic.Int64 // the write deadline in place, unix nanoseconds; 0: none
	rSet         atomic.Bool  // a read deadline is in place
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	now := time.Now().UnixNano()
	if u := c.wUntil.Load(); u-now < c.writeTimeout/2 {
		u = now + c.writeTimeout
		if err := c.Conn.SetWriteDeadline(time.Unix(0, u)); err != nil {
			return 0, err
		}
		c.wUntil.Store(u)
	}
	return c.Conn.Write(p)
}

// SetWriteDeadline passes a deadline on. Clearing it (net/http does after every request) is not
// passed on: the deadline in place bounds only writes, and the next write refreshes it first.
func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		c.wUntil.Store(0)
		return nil
	}
	c.wUntil.Store(t.UnixNano())
	return c.Conn.SetWriteDeadline(t)
}

// SetReadDeadline passes a deadline on; clearing one that is not set (net/http does after every
// request's headers) costs nothing.
func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() && !c.rSet.Swap(false) {
		return nil
	}
	if !t.IsZero() {
		c.rSet.Store(true)
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// CloseWrite lets net/http half-close the connection, as it does with a *net.TCPConn, when it
// stops reading a request body it will not use.
func (c *deadlineConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
