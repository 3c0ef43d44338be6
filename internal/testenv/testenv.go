// Package testenv starts the real components that end-to-end tests run against (registry, docker,
// object-storage servers, ...) on loopback, and finds the clients. A missing component skips the
// test on a developer's machine but fails it in CI (CI=true), so CI can never pass by skipping.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// InCI reports whether missing components must fail tests.
func InCI() bool { v, _ := strconv.ParseBool(os.Getenv("CI")); return v }

// Need returns the path of the program bin (looked up in PATH and in $(go env GOPATH)/bin), or
// stops the test: a failure in CI, a skip elsewhere. The message says how to install it.
func Need(t testing.TB, bin, install string) string {
	t.Helper()
	if p, err := LookPath(bin); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found: %s (or run scripts/deps.sh)", bin, install)
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// LookPath finds bin in PATH, then in GOBIN / GOPATH/bin, where `go install` puts tools.
func LookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, bin)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", bin, exec.ErrNotFound)
}

// FreePort returns a TCP port that is free on host right now (host is a loopback address such as
// "127.0.0.3"; every 127.0.0.0/8 address works on Linux without configuration).
func FreePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("find a free port on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr returns "host:port" with a free port.
func Addr(t testing.TB, host string) string {
	return net.JoinHostPort(host, strconv.Itoa(FreePort(t, host)))
}

// Process is a started component. Its combined output is kept and shown when the test fails.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process (SIGTERM, then SIGKILL after 5 s) and waits for it.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Start runs name with args in the background until the test ends. env entries are added to the
// current environment.
func Start(t testing.TB, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	buf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, out: buf, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, tail(buf.String(), 8000))
		}
	})
	return p
}

// WaitHTTP polls url until it answers with any HTTP status, the process exits, or 60 s pass.
func WaitHTTP(t testing.TB, p *Process, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			return
		}
		if p != nil && p.Exited() {
			t.Fatalf("%s exited before answering on %s: %v\n%s", p.Name, url, p.err, tail(p.Output(), 4000))
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not answer on %s within 60s: %v", nameOf(p), url, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Run runs a client command to completion within timeout and returns its combined output; a
// non-zero exit fails the test with that output.
func Run(t testing.TB, timeout time.Duration, env []string, bin string, args ...string) string {
	t.Helper()
	out, err := RunErr(timeout, env, bin, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(bin), args, err, tail(out, 8000))
	}
	return out
}

// RunErr is Run that returns the error instead of failing.
func RunErr(timeout time.Duration, env []string, bin string, args ...string) (string, error) {
	return RunErrInput(timeout, env, nil, bin, args...)
}

// RunErrInput is RunErr with stdin (nil: none).
func RunErrInput(timeout time.Duration, env []string, stdin io.Reader, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return string(out), err
}

func nameOf(p *Process) string {
	if p == nil {
		return "server"
	}
	return p.Name
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
