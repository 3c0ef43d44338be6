package mirrors

import (
	"context"
	"errors"
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
	// Credentials is what the probe of ProbeKey says of the proxy's credentials: "" for a mirror
	// without them (Spec.CheckCredentials false), else CredentialsUnchecked before the first
	// answer, CredentialsOK, CredentialsNoProbe (accepted, but the probe object is missing: sync
	// has not run yet), CredentialsUnverified (the probe object is refused but blobs are
	// readable) or CredentialsRefused (the mirror is not used, and Healthy is false).
	Credentials string `json:"credentials,omitempty"`
	// PacedUntil is when the mirror's request to slow down ends, if it has not.
	PacedUntil time.Time `json:"paced_until,omitzero"`
	// SkippedBudget and SkippedPaced count the presence checks not made since the selector was
	// built: over budget, and while paced.
	SkippedBudget uint64 `json:"checks_skipped_budget"`
	SkippedPaced  uint64 `json:"checks_skipped_paced"`
}

// Health returns every mirror's state in table order.
func (s *Selector) Health() []MirrorHealth {
	out := make([]MirrorHealth, len(s.mirrors))
	now := s.now().UnixNano()
	for i, m := range s.mirrors {
		st := &s.state[i]
		h := MirrorHealth{
			Name: m.name, Enabled: m.enabled, Healthy: true, Failures: int(st.fails.Load()),
			SkippedBudget: st.skippedBudget.Load(), SkippedPaced: st.skippedPaced.Load(),
		}
		if u := st.downUntil.Load(); u != 0 {
			h.Healthy, h.DownUntil = false, time.Unix(0, u).UTC()
		}
		if e := st.lastErr.Load(); e != nil {
			h.LastError = *e
		}
		if m.checkCreds {
			c := credState(st.creds.Load())
			h.Credentials = c.String()
			if d := st.denied.Load(); c == credsRefused && d != nil {
				h.Healthy, h.LastError = false, *d
			}
		}
		if u := st.pacedUntil.Load(); u > now {
			h.PacedUntil = time.Unix(0, u).UTC()
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

// failedAgain records a failed retry of mirror i, already set aside: its back-off doubles.
func (s *Selector) failedAgain(i int, err error) {
	st := &s.state[i]
	b := min(2*time.Duration(st.backoff.Load()), maxBackoff)
	st.backoff.Store(int64(b))
	st.downUntil.Store(s.now().Add(b).UnixNano())
	s.log.Warn("mirror still failing", "mirror", s.mirrors[i].name, "backoff", b, "err", err.Error())
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
// and still goes elsewhere. A mirror whose credentials are refused is out until they are
// accepted: Run asks every ProbeInterval, and a request at most every Backoff, so that the blob it
// asks for can show that they work after all (see checkCredentials).
func (s *Selector) usable(i int, now int64, d oci.Digest) bool {
	st := &s.state[i]
	until := st.downUntil.Load()
	refused := credState(st.creds.Load()) == credsRefused
	if until == 0 && !refused {
		return true
	}
	if d.IsZero() {
		return false // an explanation without a blob: nothing to ask about
	}
	if refused {
		if now >= st.recheckAt.Load() && st.probing.CompareAndSwap(false, true) {
			st.recheckAt.Store(now + int64(s.opts.Backoff))
			go func() {
				defer st.probing.Store(false)
				evidence := d
				s.probeCredentials(i, &evidence)
			}()
		}
		return false
	}
	if now >= until && st.probing.CompareAndSwap(false, true) {
		go func() {
			defer st.probing.Store(false)
			s.probe(i, d)
		}()
	}
	return false
}

// outReason says why usable(i) is false, for explanations.
func (s *Selector) outReason(i int) string {
	st := &s.state[i]
	if credState(st.creds.Load()) == credsRefused {
		if d := st.denied.Load(); d != nil {
			return *d
		}
		return "credentials refused"
	}
	return "unhealthy"
}

// probe checks mirror i with a presence check for d that belongs to no request. The caller holds
// state.probing.
func (s *Selector) probe(i int, d oci.Digest) {
	st := &s.state[i]
	if s.mirrors[i].checkCreds {
		s.probeCredentials(i, &d)
		return
	}
	if s.paced(i, s.now().UnixNano()) {
		s.retryAfterPause(i)
		return
	}
	wasDown := st.downUntil.Load() != 0
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	_, err := s.stat(ctx, i, d)
	// A healthy mirror's failure was counted by stat like any other; only a failed retry of a
	// mirror already set aside lengthens its back-off.
	switch {
	case err == nil || !wasDown:
	case isBusy(err):
		s.retryAfterPause(i)
	default:
		s.failedAgain(i, err)
	}
}

// retryAfterPause moves the next retry of mirror i, if it is set aside, to the end of the pause
// it asked for: a throttled retry counts neither way.
func (s *Selector) retryAfterPause(i int) {
	st := &s.state[i]
	until := st.pacedUntil.Load()
	if cur := st.downUntil.Load(); cur != 0 && cur < until {
		st.downUntil.CompareAndSwap(cur, until)
	}
}

// Run checks every enabled mirror each ProbeInterval until ctx ends: a healthy one with a blob it
// was recently asked about, so that a mirror that stops answering is set aside even while all
// requests are served from the caches, and one set aside once its back-off has passed, so that it
// comes back without waiting for a request. A mirror with credentials (Spec.CheckCredentials) is
// asked about ProbeKey instead, idle or not, and also while its credentials are refused, so that
// it comes back as soon as they are accepted. Without Run, failures are still noticed on cache
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
			if !m.enabled || (d == nil && !m.checkCreds) || s.paced(i, now) {
				continue
			}
			refused := credState(st.creds.Load()) == credsRefused
			if until := st.downUntil.Load(); until != 0 && now < until && !refused {
				continue
			}
			if !st.probing.CompareAndSwap(false, true) {
				continue
			}
			go func() {
				defer st.probing.Store(false)
				if m.checkCreds {
					s.probeCredentials(i, nil)
					return
				}
				s.probe(i, *d)
			}()
		}
	}
}

// probeCredentials is the background probe of a mirror with credentials: its ProbeKey answers for
// the service and the credentials at once. evidence is a blob a client asked for, or nil. The
// caller holds state.probing.
func (s *Selector) probeCredentials(i int, evidence *oci.Digest) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	wasDown := s.state[i].downUntil.Load() != 0
	err := s.checkCredentials(ctx, i, evidence)
	switch {
	case err == nil, errors.Is(err, ErrDenied):
	case isBusy(err):
		s.retryAfterPause(i)
	case wasDown:
		s.failedAgain(i, err)
	default:
		s.failed(i, err)
	}
}
