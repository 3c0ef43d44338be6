package mirrors

import (
	"context"
	"time"

	"github.com/happy-turtle/oci-proxy/oci"
)

// MirrorHealth is one mirror's state, for readiness and metrics.
type MirrorHealth struct {
	Name      string    `json:"name"`
	Enabled   bool      `json:"enabled"`
	Healthy   bool      `json:"healthy"`
	Failures  int       `json:"consecutive_failures"`
	DownUntil time.Time `json:"down_until,omitzero"` // when the next retry is due
	LastError string    `json:"last_error,omitempty"`
}

// Health returns every mirror's state in table order.
func (s *Selector) Health() []MirrorHealth {
	out := make([]MirrorHealth, len(s.mirrors))
	for i, m := range s.mirrors {
		st := &s.state[i]
		h := MirrorHealth{Name: m.name, Enabled: m.enabled, Healthy: true, Failures: int(st.fails.Load())}
		if u := st.downUntil.Load(); u != 0 {
			h.Healthy, h.DownUntil = false, time.Unix(0, u).UTC()
		}
		if e := st.lastErr.Load(); e != nil {
			h.LastError = *e
		}
		out[i] = h
	}
	return out
}

// failed counts a failed check against mirror i and sets it aside after HealthAfter in a row.
func (s *Selector) failed(i int, err error) {
	st := &s.state[i]
	msg := err.Error()
	st.lastErr.Store(&msg)
	n := st.fails.Add(1)
	if int(n) < s.opts.HealthAfter || st.downUntil.Load() != 0 {
		return
	}
	b := s.opts.Backoff
	st.backoff.Store(int64(b))
	if st.downUntil.CompareAndSwap(0, s.now().Add(b).UnixNano()) {
		s.log.Warn("mirror set aside", "mirror", s.mirrors[i].name, "failures", n, "backoff", b, "err", msg)
	}
}

// succeeded records an answer from mirror i. Only presence checks call it: signing is usually
// local and would otherwise hide a storage service that stopped answering.
func (s *Selector) succeeded(i int) {
	st := &s.state[i]
	// Loads first: on the common path nothing changes and the cache line stays shared.
	if st.fails.Load() != 0 {
		st.fails.Store(0)
	}
	if st.downUntil.Load() != 0 {
		st.downUntil.Store(0)
		st.backoff.Store(int64(s.opts.Backoff))
		s.log.Info("mirror healthy again", "mirror", s.mirrors[i].name)
	}
}

// usable reports whether mirror i may be tried now. A mirror set aside costs the request nothing;
// once its back-off has passed, the first request to notice starts one probe in the background
// and still goes elsewhere.
func (s *Selector) usable(i int, now int64, d oci.Digest) bool {
	st := &s.state[i]
	until := st.downUntil.Load()
	if until == 0 {
		return true
	}
	if now >= until && st.probing.CompareAndSwap(false, true) {
		go func() {
			defer st.probing.Store(false)
			s.probe(i, d)
		}()
	}
	return false
}

// probe checks mirror i with a presence check for d that belongs to no request. The caller holds
// state.probing.
func (s *Selector) probe(i int, d oci.Digest) {
	st := &s.state[i]
	wasDown := st.downUntil.Load() != 0
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	_, err := s.stat(ctx, i, d)
	// A healthy mirror's failure was counted by stat like any other; only a failed retry of a
	// mirror already set aside lengthens its back-off.
	if err == nil || !wasDown {
		return
	}
	b := min(2*time.Duration(st.backoff.Load()), maxBackoff)
	st.backoff.Store(int64(b))
	st.downUntil.Store(s.now().Add(b).UnixNano())
	s.log.Warn("mirror still failing", "mirror", s.mirrors[i].name, "backoff", b, "err", err.Error())
}

// Run checks every enabled mirror each ProbeInterval until ctx ends: a healthy one with a blob it
// was recently asked about, so that a mirror that stops answering is set aside even while all
// requests are served from the caches, and one set aside once its back-off has passed, so that it
// comes back without waiting for a request. Without Run, failures are still noticed on cache
// misses and retries are started by requests.
func (s *Selector) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.now().UnixNano()
		for i, m := range s.mirrors {
			st := &s.state[i]
			d := st.probe.Load()
			if !m.enabled || d == nil {
				continue
			}
			if until := st.downUntil.Load(); until != 0 && now < until {
				continue
			}
			if !st.probing.CompareAndSwap(false, true) {
				continue
			}
			go func() {
				defer st.probing.Store(false)
				s.probe(i, *d)
			}()
		}
	}
}
